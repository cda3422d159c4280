//! `nvme-flash sim ...`: make simulated drives and firmware images, inject faults, switch power.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use flash_tools::sim::faults::{Fault, FaultKind, OpcodeFilter};
use flash_tools::sim::image::{self, Behaviour, ImageSpec, FOREVER_MS};
use flash_tools::sim::state::{Power, ResetRequirement, Timing};
use flash_tools::sim::{SimConfig, SimController};
use nvme_spec::units::{format_size, parse_duration, parse_size};

use crate::{output, CmdError, CmdResult, Common, ExitCode};

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Create a simulated drive in DIR.
    Create {
        dir: PathBuf,
        #[arg(long, default_value = "NVFSIM0001")]
        serial: String,
        #[arg(long, default_value = "NVFARM SIM X1")]
        model: String,
        /// Firmware revision running in slot 1.
        #[arg(long = "fw", default_value = "1.0.0")]
        fw: String,
        /// Number of firmware slots (1-7).
        #[arg(long, default_value_t = 3)]
        slots: u8,
        /// Make slot 1 read-only (factory image).
        #[arg(long)]
        slot1_readonly: bool,
        /// Namespace size.
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        size: u64,
        /// Logical block size: 512 or 4096.
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
        /// Firmware update granularity in 4 KiB units (255 = any).
        #[arg(long, default_value_t = 1)]
        fwug: u8,
        /// Maximum data transfer size as a power of two of 4 KiB.
        #[arg(long, default_value_t = 5)]
        mdts: u8,
        /// Commit action 3 needs a reset (answers the --activation status) instead of activating immediately.
        #[arg(long)]
        no_immediate_activation: bool,
        /// Which reset activates a committed image: `controller` (a controller reset or more; commit actions 1
        /// and 2 answer success, action 3 without immediate activation 0x111), `subsystem` (an NVM subsystem
        /// reset or a power cycle; they answer 0x110) or `conventional` (only a power cycle; they answer 0x10B).
        #[arg(long, value_enum, default_value_t = ActivationArg::Controller)]
        activation: ActivationArg,
        /// Maximum Time for Firmware Activation (Identify MTFA, 100 ms units, at most 6553.5s; 0 = not
        /// reported): commit action 3 of an image whose activation takes longer answers 0x112.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        mtfa: Duration,
        /// The drive does not support NVM Subsystem Reset (CAP.NSSRS clear): a subsystem reset is refused.
        #[arg(long)]
        no_subsystem_reset: bool,
        /// A volatile write cache of this size (e.g. 4M; 0 = none): writes wait there until a Flush, FUA or a
        /// shutdown notification, and a power cut without one loses them.
        #[arg(long, value_parser = parse_size, default_value = "0")]
        write_cache: u64,
        /// PCI address to report (default: derived from the serial).
        #[arg(long)]
        pci: Option<String>,
        /// Enumerate into this sysfs-shaped directory, so `serial=`/`pci=` lookups find the drive.
        #[arg(long)]
        bus: Option<PathBuf>,
        /// Boot time after a reset or power-on.
        #[arg(long, value_parser = parse_duration, default_value = "200ms")]
        boot_time: Duration,
        /// Duration of a short self-test.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        self_test_short: Duration,
        /// Duration of an extended self-test.
        #[arg(long, value_parser = parse_duration, default_value = "8s")]
        self_test_extended: Duration,
    },
    /// Build a simulated-drive firmware image.
    Image {
        /// Firmware revision (1-8 characters).
        #[arg(long)]
        rev: String,
        /// Model the image is for (default: any model).
        #[arg(long)]
        model: Option<String>,
        /// What the image does once activated: ok (boots and runs normally), boot-fail (boots into a failed
        /// state: I/O errors, SMART critical warning), fallback (fails to boot; the previous slot runs again),
        /// vanish (drops off the bus for --duration), slow-boot (takes --duration to come back).
        #[arg(long, default_value = "ok")]
        behaviour: Behaviour,
        /// How long vanish / slow-boot last ("forever" = until power-cycled, for vanish).
        #[arg(long)]
        duration: Option<String>,
        /// Payload size (a multiple of 4).
        #[arg(long, value_parser = parse_size, default_value = "256k")]
        payload_size: u64,
        /// Where to write the image.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Inject or clear faults on a simulated drive (read by the drive on every command).
    Fault {
        dir: PathBuf,
        #[command(subcommand)]
        fault: FaultCommand,
    },
    /// Cut and restore the drive's power.
    PowerCycle { dir: PathBuf },
    /// Switch the drive's power off or on.
    Power {
        dir: PathBuf,
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Show a simulated drive's state: power, device name, firmware slots, counters, faults.
    Status { dir: PathBuf },
    /// Serve simulated drives over NVMe/TCP, so a machine with the nvme-tcp module attaches them as
    /// /dev/nvmeX (`nvme connect -t tcp -a ADDR -s PORT -n NQN`). Every command runs on the drive in its
    /// directory, with its faults and firmware slots; runs until interrupted.
    Serve {
        /// Simulated drive directories; each is one NVM subsystem.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Address and port to listen on (port 0 picks a free one; the address chosen is printed).
        #[arg(long, default_value = "127.0.0.1:4420")]
        listen: std::net::SocketAddr,
        /// The subsystem NQN (only with one drive); default nqn.2024-01.dev.nvfarm:sim:SERIAL, as the
        /// drive's Identify Controller reports.
        #[arg(long)]
        nqn: Option<String>,
        /// In-capsule data the host may send with an I/O command (IOCCSZ).
        #[arg(long, value_parser = parse_size, default_value = "8k")]
        inline_data: u64,
        /// The most data in one H2CData PDU (MAXH2CDATA).
        #[arg(long, value_parser = parse_size, default_value = "256k")]
        max_h2c_data: u64,
        /// I/O queues each controller grants at most.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        max_io_queues: u16,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum FaultCommand {
    /// Add latency to matching commands.
    Latency {
        /// How much longer each matching command takes (e.g. 50ms).
        #[arg(value_parser = parse_duration)]
        delay: Duration,
        /// Only commands with this opcode: a name (identify, get-log-page, fw-download, fw-commit, self-test, format,
        /// sanitize, read, write, flush, ...) or admin:0xNN / io:0xNN (default: every command).
        #[arg(long)]
        opcode: Option<OpcodeFilter>,
        /// Fire this many times, then the fault removes itself (default: until cleared).
        #[arg(long)]
        count: Option<u32>,
    },
    /// Make matching commands hang (never complete; the host's command timeout fires) until the fault is cleared.
    Hang {
        /// Only commands with this opcode: a name (identify, get-log-page, fw-download, fw-commit, self-test, format,
        /// sanitize, read, write, flush, ...) or admin:0xNN / io:0xNN (default: every command).
        #[arg(long)]
        opcode: Option<OpcodeFilter>,
        /// Fire this many times, then the fault removes itself (default: until cleared).
        #[arg(long)]
        count: Option<u32>,
    },
    /// Complete matching commands with an NVMe status (e.g. 0x4006).
    Status {
        /// The status: (SCT << 8 | SC), with 0x4000 for Do Not Retry (e.g. 0x4006, 0x0106).
        #[arg(value_parser = parse_status)]
        status: u16,
        /// Only commands with this opcode: a name (identify, get-log-page, fw-download, fw-commit, self-test, format,
        /// sanitize, read, write, flush, ...) or admin:0xNN / io:0xNN (default: every command).
        #[arg(long)]
        opcode: Option<OpcodeFilter>,
        /// Fire this many times, then the fault removes itself (default: until cleared).
        #[arg(long)]
        count: Option<u32>,
    },
    /// Lose power when a firmware download has received AFTER chunks.
    PowerLoss {
        /// Chunks received before power is lost (the next one loses it).
        #[arg(long, default_value_t = 1)]
        after: u32,
    },
    /// Drop off the bus: until power-cycled, or for --for.
    Vanish {
        /// Come back by itself after this long (default: only a power cycle brings it back).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Drop off when a command with this opcode arrives (default: at once, on the next command).
        #[arg(long)]
        opcode: Option<OpcodeFilter>,
    },
    /// Make the next self-test(s) fail.
    SelfTestFailure {
        /// How many self-tests fail.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Fail reads of these blocks with Unrecovered Read Error.
    MediaError {
        /// The first bad block.
        #[arg(long)]
        lba: u64,
        /// How many blocks from --lba are bad.
        #[arg(long, default_value_t = 1)]
        blocks: u64,
    },
    /// Remove every fault.
    Clear,
    /// List the faults in effect.
    List,
}

/// `--activation`: the reset that activates a committed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// A controller reset (or anything more) activates it.
    Controller,
    /// An NVM subsystem reset or a power cycle activates it.
    Subsystem,
    /// Only a power cycle (conventional reset) activates it.
    Conventional,
}

impl From<ActivationArg> for ResetRequirement {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Controller => ResetRequirement::Controller,
            ActivationArg::Subsystem => ResetRequirement::Subsystem,
            ActivationArg::Conventional => ResetRequirement::Conventional,
        }
    }
}

/// `--mtfa` in ms, if Identify can report it (100 ms units in 16 bits).
fn mtfa_ms(d: Duration) -> Result<u32, CmdError> {
    let ms = d.as_millis();
    if ms > u16::MAX as u128 * 100 {
        return Err(CmdError::usage(format!(
            "--mtfa {}: Identify reports MTFA in 100 ms units up to 6553.5s; give at most 6553s (0 = not reported)",
            humantime::format_duration(d)
        )));
    }
    Ok(ms as u32)
}

fn parse_status(s: &str) -> Result<u16, String> {
    crate::device_cmd::parse_u32(s)
        .ok()
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| format!("'{s}' is not a status (e.g. 0x4006)"))
}

#[derive(Serialize)]
struct SimStatus {
    dir: PathBuf,
    serial: String,
    model: String,
    device_name: String,
    power: Power,
    running_revision: String,
    active_slot: u8,
    next_slot: Option<u8>,
    slots: Vec<Option<String>>,
    namespace_bytes: u64,
    block_size: u64,
    power_cycles: u128,
    unsafe_shutdowns: u128,
    error_count: u64,
    faults: Vec<String>,
}

pub fn run(cmd: SimCommand, common: &Common) -> CmdResult {
    match cmd {
        SimCommand::Create {
            dir,
            serial,
            model,
            fw,
            slots,
            slot1_readonly,
            size,
            block_size,
            fwug,
            mdts,
            no_immediate_activation,
            activation,
            mtfa,
            no_subsystem_reset,
            write_cache,
            pci,
            bus,
            boot_time,
            self_test_short,
            self_test_extended,
        } => {
            let cfg = SimConfig {
                serial,
                model,
                firmware_revision: fw,
                slots,
                slot1_readonly,
                activation_without_reset: !no_immediate_activation,
                activation: activation.into(),
                mtfa_ms: mtfa_ms(mtfa)?,
                subsystem_reset: !no_subsystem_reset,
                write_cache_bytes: write_cache,
                size_bytes: size,
                block_size,
                fwug,
                mdts,
                pci_address: pci,
                bus,
                timing: Timing {
                    boot_ms: boot_time.as_millis() as u64,
                    self_test_short_ms: self_test_short.as_millis() as u64,
                    self_test_extended_ms: self_test_extended.as_millis() as u64,
                },
            };
            let sim = SimController::create(&dir, &cfg)?;
            let st = sim.state()?;
            if common.json {
                output::json(&status(&sim)?);
            } else {
                outln!(
                    "created simulated drive {} ({} serial {}, firmware {} in slot 1 of {}, {}) as nvme{}",
                    sim.dir().display(),
                    st.model,
                    st.serial,
                    st.firmware.running_revision,
                    st.firmware.slots,
                    format_size(st.namespace.size_bytes),
                    st.instance
                );
            }
        }
        SimCommand::Image {
            rev,
            model,
            behaviour,
            duration,
            payload_size,
            output: out,
        } => {
            let behaviour_ms = match duration.as_deref() {
                None => 0,
                Some("forever") => FOREVER_MS,
                Some(d) => parse_duration(d)
                    .map_err(CmdError::usage)?
                    .as_millis()
                    .min(FOREVER_MS as u128 - 1) as u32,
            };
            let spec = ImageSpec {
                revision: rev,
                model,
                behaviour,
                behaviour_ms,
                payload_len: payload_size as usize,
            };
            let img = image::build(&spec)
                .map_err(|e| CmdError::usage(format!("cannot build image: {e}")))?;
            std::fs::write(&out, &img)
                .map_err(|e| CmdError::usage(format!("cannot write {}: {e}", out.display())))?;
            let header = image::parse(&img).expect("just built");
            if common.json {
                output::json(&header);
            } else {
                outln!(
                    "wrote {} ({} bytes): revision {}, behaviour {}{}",
                    out.display(),
                    img.len(),
                    header.revision,
                    header.behaviour,
                    header
                        .model
                        .map(|m| format!(", model {m}"))
                        .unwrap_or_default()
                );
            }
        }
        SimCommand::Fault { dir, fault } => {
            let sim = SimController::open(&dir)?;
            let op = |o: Option<OpcodeFilter>| o.map(|f| f.to_string());
            let f = match fault {
                FaultCommand::Latency {
                    delay,
                    opcode,
                    count,
                } => Fault {
                    ms: Some(delay.as_millis() as u64),
                    opcode: op(opcode),
                    count,
                    ..Fault::new(FaultKind::Latency)
                },
                FaultCommand::Hang { opcode, count } => Fault {
                    opcode: op(opcode),
                    count,
                    ..Fault::new(FaultKind::Hang)
                },
                FaultCommand::Status {
                    status,
                    opcode,
                    count,
                } => Fault {
                    status: Some(status),
                    opcode: op(opcode),
                    count,
                    ..Fault::new(FaultKind::Status)
                },
                FaultCommand::PowerLoss { after } => Fault {
                    after: Some(after),
                    ..Fault::new(FaultKind::PowerLossDuringDownload)
                },
                FaultCommand::Vanish { duration, opcode } => Fault {
                    ms: duration.map(|d| d.as_millis() as u64),
                    opcode: op(opcode),
                    ..Fault::new(FaultKind::Vanish)
                },
                FaultCommand::SelfTestFailure { count } => Fault {
                    count: Some(count),
                    ..Fault::new(FaultKind::SelfTestFailure)
                },
                FaultCommand::MediaError { lba, blocks } => Fault {
                    lba: Some(lba),
                    blocks: Some(blocks),
                    ..Fault::new(FaultKind::MediaError)
                },
                FaultCommand::Clear => {
                    sim.clear_faults()?;
                    eprintln!("cleared all faults on {}", dir.display());
                    return Ok(ExitCode::Passed);
                }
                FaultCommand::List => {
                    let list: Vec<String> =
                        sim.faults()?.faults.iter().map(Fault::describe).collect();
                    if common.json {
                        output::json(&sim.faults()?.faults);
                    } else if list.is_empty() {
                        outln!("no faults");
                    } else {
                        list.iter().for_each(|l| outln!("{l}"));
                    }
                    return Ok(ExitCode::Passed);
                }
            };
            let text = f.describe();
            sim.add_fault(f)?;
            eprintln!("injected on {}: {text}", dir.display());
        }
        SimCommand::PowerCycle { dir } => {
            let sim = SimController::open(&dir)?;
            sim.power_cycle()?;
            let st = sim.state()?;
            eprintln!(
                "power-cycled {} (power cycles: {}, now nvme{})",
                dir.display(),
                st.counters.power_cycles,
                st.instance
            );
        }
        SimCommand::Power { dir, state } => {
            let sim = SimController::open(&dir)?;
            sim.set_power(matches!(state, OnOff::On))?;
            eprintln!("power {:?} on {}", state, dir.display());
        }
        SimCommand::Serve {
            dirs,
            listen,
            nqn,
            inline_data,
            max_h2c_data,
            max_io_queues,
        } => serve(
            dirs,
            listen,
            nqn,
            inline_data,
            max_h2c_data,
            max_io_queues,
            common,
        )?,
        SimCommand::Status { dir } => {
            let sim = SimController::open(&dir)?;
            let s = status(&sim)?;
            if common.json {
                output::json(&s);
            } else {
                output::table(&s);
            }
        }
    }
    Ok(ExitCode::Passed)
}

#[derive(Serialize)]
struct Served {
    listen: String,
    subsystems: Vec<ServedDrive>,
}

#[derive(Serialize)]
struct ServedDrive {
    nqn: String,
    dir: String,
    serial: String,
}

fn serve(
    dirs: Vec<PathBuf>,
    listen: std::net::SocketAddr,
    nqn: Option<String>,
    inline_data: u64,
    max_h2c_data: u64,
    max_io_queues: u16,
    common: &Common,
) -> Result<(), CmdError> {
    use flash_tools::target::{Target, TargetOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if nqn.is_some() && dirs.len() > 1 {
        return Err(CmdError::usage(
            "--nqn names one subsystem; with several drives each is served as nqn.2024-01.dev.nvfarm:sim:SERIAL",
        ));
    }
    if !(4096..=1 << 20).contains(&max_h2c_data) || max_h2c_data % 4 != 0 {
        return Err(CmdError::usage(format!(
            "--max-h2c-data {max_h2c_data}: must be a multiple of 4 from 4k to 1M"
        )));
    }
    if inline_data > 1 << 20 {
        return Err(CmdError::usage(format!(
            "--inline-data {inline_data}: at most 1M"
        )));
    }
    let mut drives = Vec::new();
    let mut shown = Vec::new();
    for dir in &dirs {
        let sim = SimController::open(dir)?;
        let serial = sim.state()?.serial;
        let name = nqn
            .clone()
            .unwrap_or_else(|| format!("nqn.2024-01.dev.nvfarm:sim:{serial}"));
        shown.push(ServedDrive {
            nqn: name.clone(),
            dir: dir.display().to_string(),
            serial,
        });
        drives.push((name, sim));
    }
    let opts = TargetOptions {
        inline_data: inline_data as u32,
        max_h2c_data: max_h2c_data as u32,
        max_io_queues,
        ..TargetOptions::default()
    };
    let target = Arc::new(Target::new(drives, opts).map_err(|e| CmdError::usage(e.to_string()))?);
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        CmdError::new(
            ExitCode::Infrastructure,
            anyhow::anyhow!("cannot listen on {listen}: {e}"),
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CmdError::new(ExitCode::Infrastructure, e))?;
    let served = Served {
        listen: bound.to_string(),
        subsystems: shown,
    };
    if common.json {
        println!(
            "{}",
            serde_json::to_string(&served).expect("plain data serializes")
        );
    } else {
        for s in &served.subsystems {
            println!(
                "serving {} ({}) as {} on {}",
                s.dir, s.serial, s.nqn, served.listen
            );
        }
        println!(
            "attach with: nvme connect -t tcp -a {} -s {} -n {}",
            bound.ip(),
            bound.port(),
            served.subsystems[0].nqn
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    target
        .serve(listener, &stop)
        .map_err(|e| CmdError::new(ExitCode::Infrastructure, e))?;
    eprintln!("nvme-flash: stopped serving; every connection is closed");
    Ok(())
}

fn status(sim: &SimController) -> Result<SimStatus, CmdError> {
    let st = sim.state()?;
    let faults = sim.faults()?.faults.iter().map(Fault::describe).collect();
    Ok(SimStatus {
        dir: sim.dir().to_path_buf(),
        serial: st.serial.clone(),
        model: st.model.clone(),
        device_name: format!("nvme{}", st.instance),
        power: st.power.clone(),
        running_revision: st.firmware.running_revision.clone(),
        active_slot: st.firmware.active_slot,
        next_slot: st.firmware.next_slot,
        slots: st
            .firmware
            .images
            .iter()
            .take(st.firmware.slots as usize)
            .map(|i| i.as_ref().map(|i| i.revision.clone()))
            .collect(),
        namespace_bytes: st.namespace.size_bytes,
        block_size: st.namespace.block_size(),
        power_cycles: st.counters.power_cycles,
        unsafe_shutdowns: st.counters.unsafe_shutdowns,
        error_count: st.error_count,
        faults,
    })
}
