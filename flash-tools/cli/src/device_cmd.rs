//! Every `nvme-flash DEVICE` subcommand in one module (~640 lines): the clap definitions and their thin
//! handlers over the library, read together.
//!
//! `nvme-flash DEVICE ...`: commands addressed to one drive.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use flash_tools::device::{DeviceAddr, Drive, Locator};
use flash_tools::firmware::{
    self, FailureKind, PowerCycle, UpdateEvent, UpdateOptions, UpdateResult,
};
use flash_tools::sim::SimController;
use flash_tools::ResetKind;
use nvme_spec::command::{sanitize_action, self_test_code, NSID_ALL};
use nvme_spec::features::{feature_name, select};
use nvme_spec::log_page::self_test_result;
use nvme_spec::units::{parse_duration, parse_size};
use nvme_spec::Activation;
use nvme_spec::CommitAction;

use crate::{output, CmdError, CmdResult, Common, ExitCode};

#[derive(Parser, Debug)]
#[command(name = "nvme-flash DEVICE", no_binary_name = false)]
struct DeviceCli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: Action,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogKind {
    Smart,
    Fw,
    Error,
    Selftest,
    Effects,
    Sanitize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SelfTestKind {
    Short,
    Extended,
    Abort,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SanitizeKind {
    BlockErase,
    CryptoErase,
    Overwrite,
    ExitFailure,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Select {
    Current,
    Default,
    Saved,
    Supported,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Identify Controller (nvme-cli `id-ctrl`).
    Info,
    /// Identify Namespace (nvme-cli `id-ns`).
    IdNs {
        #[arg(long, default_value_t = 1)]
        nsid: u32,
    },
    /// Read a log page.
    Log {
        #[arg(value_enum)]
        kind: LogKind,
        /// Error log entries to read.
        #[arg(long, default_value_t = 16)]
        entries: usize,
    },
    /// Update the firmware: download, commit, activate, verify, roll back on failure.
    Update {
        image: PathBuf,
        /// Firmware slot (1-7); by default a writable slot other than the running one.
        #[arg(long)]
        slot: Option<u8>,
        /// reset: commit then reset the controller; now: activate without reset; next-reset: stage only.
        #[arg(long, default_value = "reset")]
        activate: Activation,
        /// Expected sha256 of the image (hex); the update refuses a mismatching file.
        #[arg(long)]
        sha256: Option<String>,
        /// Revision the drive must report afterwards (default: what the drive lists for the slot).
        #[arg(long)]
        expect_rev: Option<String>,
        /// Largest chunk to transfer (the drive's MDTS also limits it).
        #[arg(long, value_parser = parse_size, default_value = "128k")]
        xfer: u64,
        /// How long to wait for the drive to come back after activation.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        wait_timeout: Duration,
        /// Retries per chunk for statuses without Do Not Retry.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// Leave a drive that came up wrong as it is instead of rolling back.
        #[arg(long)]
        no_rollback: bool,
        /// A shell command that power-cycles the drive (off, wait, on), for a drive whose image only a power
        /// cycle activates (0x10B) or that refuses the NVM subsystem reset it asks for (0x110). Without it such
        /// an update stops and says which reset the drive needs; a simulated drive (sim:DIR) uses its own
        /// power switch.
        #[arg(long, value_name = "CMD")]
        power_cycle_cmd: Option<String>,
    },
    /// Firmware Image Download only (no commit), like nvme-cli `fw-download`.
    FwDownload {
        image: PathBuf,
        #[arg(long, value_parser = parse_size, default_value = "128k")]
        xfer: u64,
        /// Byte offset of the first chunk.
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
    },
    /// Firmware Commit only, like nvme-cli `fw-commit`.
    FwCommit {
        #[arg(long)]
        slot: u8,
        /// 0 replace, 1 replace + activate at reset, 2 activate slot at reset, 3 replace + activate now.
        #[arg(long)]
        action: u8,
    },
    /// Controller (or NVM subsystem) reset.
    Reset {
        #[arg(long)]
        subsystem: bool,
    },
    /// Start (or abort) a device self-test.
    SelfTest {
        #[arg(value_enum)]
        kind: SelfTestKind,
        #[arg(long, default_value_t = NSID_ALL)]
        nsid: u32,
        /// Wait for completion and print the result (the self-test is aborted if it runs past --wait-timeout).
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait before aborting the self-test (extended tests take hours on real drives).
        #[arg(long, value_parser = parse_duration, default_value = "2h", requires = "wait")]
        wait_timeout: Duration,
    },
    /// Format NVM.
    Format {
        #[arg(long, default_value_t = 1)]
        nsid: u32,
        #[arg(long, default_value_t = 0)]
        lbaf: u8,
        /// Secure erase setting: 0 none, 1 user data erase, 2 cryptographic erase.
        #[arg(long, default_value_t = 0)]
        ses: u8,
    },
    /// Sanitize the whole NVM subsystem.
    Sanitize {
        #[arg(value_enum)]
        action: SanitizeKind,
    },
    /// Get Features.
    GetFeature {
        #[arg(value_parser = parse_u8)]
        fid: u8,
        #[arg(long, value_enum, default_value = "current")]
        sel: Select,
        #[arg(long, default_value_t = 0)]
        nsid: u32,
    },
    /// Set Features.
    SetFeature {
        #[arg(value_parser = parse_u8)]
        fid: u8,
        #[arg(value_parser = parse_u32)]
        value: u32,
        #[arg(long)]
        save: bool,
    },
    /// Read blocks with an NVMe Read command (I/O passthrough) into a file.
    Read {
        #[arg(long, default_value_t = 1)]
        nsid: u32,
        #[arg(long)]
        slba: u64,
        #[arg(long, default_value_t = 1)]
        blocks: u32,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Write a file with NVMe Write commands (I/O passthrough), zero-padded to whole blocks.
    Write {
        #[arg(long, default_value_t = 1)]
        nsid: u32,
        #[arg(long)]
        slba: u64,
        #[arg(long)]
        data: PathBuf,
    },
    /// Write Uncorrectable, like nvme-cli `write-uncor`: the blocks read back as Unrecovered Read Error until
    /// they are written again.
    WriteUncor {
        #[command(flatten)]
        range: BlockRange,
    },
    /// Write Zeroes, like nvme-cli `write-zeroes`.
    WriteZeroes {
        #[command(flatten)]
        range: BlockRange,
    },
    /// Dataset Management, like nvme-cli `dsm`: one range per --slbs/--blocks pair; --ad deallocates them
    /// (they read back as zeros).
    Dsm {
        /// Namespace.
        #[arg(
            short = 'n',
            long = "namespace-id",
            alias = "nsid",
            default_value_t = 1
        )]
        nsid: u32,
        /// Starting LBAs of the ranges, comma-separated.
        #[arg(short = 's', long, value_delimiter = ',', required = true)]
        slbs: Vec<u64>,
        /// Blocks in each range (not zeroes-based, as in the range itself), comma-separated, one per --slbs.
        #[arg(short = 'b', long, value_delimiter = ',', required = true)]
        blocks: Vec<u32>,
        /// Deallocate the ranges (AD).
        #[arg(short = 'd', long)]
        ad: bool,
    },
    /// Flush the volatile write cache, like nvme-cli `flush`.
    Flush {
        /// Namespace.
        #[arg(
            short = 'n',
            long = "namespace-id",
            alias = "nsid",
            default_value_t = 1
        )]
        nsid: u32,
    },
    /// Compare blocks with a file, like nvme-cli `compare`: a mismatch is the Compare Failure status (exit 1).
    Compare {
        #[command(flatten)]
        range: BlockRange,
        /// The data to compare with: exactly (--block-count + 1) blocks.
        #[arg(short = 'd', long)]
        data: PathBuf,
    },
    /// Wait until the drive is present and answers Identify.
    Wait {
        #[arg(long = "for", value_parser = parse_duration, default_value = "60s")]
        within: Duration,
    },
}

/// A block range as nvme-cli gives it.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct BlockRange {
    /// Namespace.
    #[arg(
        short = 'n',
        long = "namespace-id",
        alias = "nsid",
        default_value_t = 1
    )]
    nsid: u32,
    /// First block.
    #[arg(short = 's', long)]
    start_block: u64,
    /// Blocks, zeroes-based as in nvme-cli (0 = one block, at most 65535 = 65536 blocks).
    #[arg(short = 'c', long, default_value_t = 0)]
    block_count: u16,
}

impl BlockRange {
    fn blocks(&self) -> u32 {
        self.block_count as u32 + 1
    }
}

/// Blocks of `bs` bytes one command may carry on this drive: MDTS, and NLB's 16 bits.
fn blocks_per_command(ctrl: &flash_tools::Controller, bs: u64) -> Result<u64, CmdError> {
    let mdts = ctrl.identify_controller()?.max_transfer_bytes();
    Ok(mdts.map_or(65536, |m| (m / bs).clamp(1, 65536)))
}

pub(crate) fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number (decimal or 0x hex)"))
}

fn parse_u8(s: &str) -> Result<u8, String> {
    parse_u32(s).and_then(|v| u8::try_from(v).map_err(|_| format!("'{s}' does not fit in a byte")))
}

/// `nvme-flash list`.
pub fn list(common: &Common) -> CmdResult {
    let ctrls = common.sysfs().controllers().map_err(|e| {
        CmdError::new(
            ExitCode::Infrastructure,
            anyhow::anyhow!(
                "cannot read {}/class/nvme: {e}",
                common.sysfs_root.display()
            ),
        )
    })?;
    if common.json {
        output::json(&ctrls);
    } else if ctrls.is_empty() {
        outln!(
            "no NVMe controllers under {}/class/nvme",
            common.sysfs_root.display()
        );
    } else {
        outln!(
            "{:<8} {:<20} {:<28} {:<8} {:<14}",
            "NAME",
            "SERIAL",
            "MODEL",
            "FW(sysfs)",
            "ADDRESS"
        );
        for c in ctrls {
            outln!(
                "{:<8} {:<20} {:<28} {:<8} {:<14}",
                c.name,
                c.serial,
                c.model,
                c.firmware_rev,
                c.address
            );
        }
    }
    Ok(ExitCode::Passed)
}

pub fn run(args: Vec<String>, common: Common) -> CmdResult {
    let device = args[0].clone();
    let parsed = DeviceCli::try_parse_from(
        std::iter::once(format!("nvme-flash {device}")).chain(args[1..].iter().cloned()),
    );
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Passed
            });
        }
    };
    // Options may come before or after DEVICE.
    let common = Common {
        json: common.json || cli.common.json,
        timeout: if cli.common.timeout != Duration::from_secs(60) {
            cli.common.timeout
        } else {
            common.timeout
        },
        sysfs_root: if cli.common.sysfs_root.as_os_str() != "/sys" {
            cli.common.sysfs_root
        } else {
            common.sysfs_root
        },
        verbose: common.verbose.max(cli.common.verbose),
    };
    let addr: DeviceAddr = device.parse().map_err(CmdError::usage)?;
    let locator = Locator::new(addr, common.sysfs());
    let mut drive = Drive::open(locator, Some(common.timeout))?;
    execute(&mut drive, cli.action, &common)
}

fn execute(drive: &mut Drive, action: Action, common: &Common) -> CmdResult {
    let ctrl = drive.controller().clone();
    let show = |v: &dyn erased::Show| {
        if common.json {
            v.json()
        } else {
            v.table()
        }
    };
    match action {
        Action::Info => show(&ctrl.identify_controller()?),
        Action::IdNs { nsid } => show(&ctrl.identify_namespace(nsid)?),
        Action::Log { kind, entries } => match kind {
            LogKind::Smart => show(&ctrl.smart_log()?),
            LogKind::Fw => {
                let id = ctrl.identify_controller()?;
                show(
                    &ctrl
                        .firmware_slot_log()?
                        .report(id.firmware_slots(), id.slot1_read_only()),
                )
            }
            LogKind::Error => show(&ctrl.error_log(entries)?),
            LogKind::Selftest => show(&ctrl.self_test_log()?),
            LogKind::Effects => show(&ctrl.effects_log()?.entries()),
            LogKind::Sanitize => show(&ctrl.sanitize_status()?),
        },
        Action::Update {
            image,
            slot,
            activate,
            sha256,
            expect_rev,
            xfer,
            wait_timeout,
            retries,
            no_rollback,
            power_cycle_cmd,
        } => {
            let bytes = std::fs::read(&image).map_err(|e| {
                CmdError::usage(format!(
                    "cannot read firmware image {}: {e}",
                    image.display()
                ))
            })?;
            let opts = UpdateOptions {
                slot,
                activation: activate,
                sha256,
                expect_revision: expect_rev,
                chunk_retries: retries,
                max_chunk: xfer,
                come_back_timeout: wait_timeout,
                rollback: !no_rollback,
                cancel: Some(interrupt_flag()),
                power_cycle: power_cycle_for(&drive.locator.addr, power_cycle_cmd),
            };
            return update(drive, &bytes, &opts, common);
        }
        Action::FwDownload {
            image,
            xfer,
            offset,
        } => {
            let bytes = std::fs::read(&image).map_err(|e| {
                CmdError::usage(format!(
                    "cannot read firmware image {}: {e}",
                    image.display()
                ))
            })?;
            if xfer == 0 || xfer % 4 != 0 || offset % 4 != 0 || bytes.len() % 4 != 0 {
                return Err(CmdError::usage(
                    "--xfer, --offset and the image size must be non-zero multiples of 4 bytes",
                ));
            }
            for (i, chunk) in bytes.chunks(xfer as usize).enumerate() {
                ctrl.firmware_download(offset + i as u64 * xfer, chunk)?;
            }
            eprintln!("downloaded {} bytes at offset {offset:#x}", bytes.len());
        }
        Action::FwCommit { slot, action } => {
            let ca = CommitAction::from_value(action).ok_or_else(|| {
                CmdError::usage(format!("--action {action}: expected 0, 1, 2 or 3"))
            })?;
            if slot > 7 {
                return Err(CmdError::usage(format!(
                    "--slot {slot}: expected 0 (controller chooses) to 7"
                )));
            }
            match ctrl.firmware_commit(slot, ca)? {
                flash_tools::controller::CommitOutcome::Committed => {
                    eprintln!("committed: slot {slot}, {}", ca.describe())
                }
                flash_tools::controller::CommitOutcome::NeedsReset(s) => {
                    eprintln!("committed: slot {slot}; the drive says {s}")
                }
            }
        }
        Action::Reset { subsystem } => {
            ctrl.reset(if subsystem {
                ResetKind::Subsystem
            } else {
                ResetKind::Controller
            })?;
            eprintln!("reset issued to {}", ctrl.name());
        }
        Action::SelfTest {
            kind,
            nsid,
            wait,
            wait_timeout,
        } => {
            let code = match kind {
                SelfTestKind::Short => self_test_code::SHORT,
                SelfTestKind::Extended => self_test_code::EXTENDED,
                SelfTestKind::Abort => self_test_code::ABORT,
            };
            if wait && code != self_test_code::ABORT {
                return wait_self_test(&ctrl, nsid, code, wait_timeout, common);
            }
            ctrl.device_self_test(nsid, code)?;
            eprintln!("self-test {kind:?} started on {}", ctrl.name());
        }
        Action::Format { nsid, lbaf, ses } => {
            ctrl.format_nvm(nsid, lbaf, ses)?;
            eprintln!("formatted namespace {nsid} with LBA format {lbaf}");
        }
        Action::Sanitize { action } => {
            let a = match action {
                SanitizeKind::BlockErase => sanitize_action::BLOCK_ERASE,
                SanitizeKind::CryptoErase => sanitize_action::CRYPTO_ERASE,
                SanitizeKind::Overwrite => sanitize_action::OVERWRITE,
                SanitizeKind::ExitFailure => sanitize_action::EXIT_FAILURE_MODE,
            };
            ctrl.sanitize(a, 0)?;
            show(&ctrl.sanitize_status()?);
        }
        Action::GetFeature { fid, sel, nsid } => {
            let s = match sel {
                Select::Current => select::CURRENT,
                Select::Default => select::DEFAULT,
                Select::Saved => select::SAVED,
                Select::Supported => select::SUPPORTED_CAPABILITIES,
            };
            let value = ctrl.get_feature(fid, s, nsid)?;
            show(&FeatureValue {
                fid,
                name: feature_name(fid),
                value,
            });
        }
        Action::SetFeature { fid, value, save } => {
            let result = ctrl.set_feature(fid, value, save, 0)?;
            show(&FeatureValue {
                fid,
                name: feature_name(fid),
                value: result,
            });
        }
        Action::Read {
            nsid,
            slba,
            blocks,
            output: out,
        } => {
            let bs = ctrl.identify_namespace(nsid)?.block_size() as u32;
            let mut buf = vec![0u8; blocks as usize * bs as usize];
            // One command moves at most MDTS.
            let per = blocks_per_command(&ctrl, bs as u64)?;
            for (i, chunk) in buf.chunks_mut(bs as usize * per as usize).enumerate() {
                ctrl.read(nsid, slba + i as u64 * per, chunk, bs)?;
            }
            std::fs::write(&out, &buf)
                .map_err(|e| CmdError::usage(format!("cannot write {}: {e}", out.display())))?;
            eprintln!(
                "read {blocks} block(s) of {bs} bytes from LBA {slba} into {}",
                out.display()
            );
        }
        Action::Write { nsid, slba, data } => {
            let bs = ctrl.identify_namespace(nsid)?.block_size() as usize;
            let mut buf = std::fs::read(&data)
                .map_err(|e| CmdError::usage(format!("cannot read {}: {e}", data.display())))?;
            if buf.is_empty() {
                return Err(CmdError::usage(format!("{} is empty", data.display())));
            }
            buf.resize(buf.len().div_ceil(bs) * bs, 0);
            let per = blocks_per_command(&ctrl, bs as u64)?;
            for (i, chunk) in buf.chunks(bs * per as usize).enumerate() {
                ctrl.write(nsid, slba + i as u64 * per, chunk, bs as u32)?;
            }
            ctrl.flush(nsid)?;
            eprintln!(
                "wrote {} block(s) of {bs} bytes at LBA {slba}",
                buf.len() / bs
            );
        }
        Action::WriteUncor { range: r } => {
            ctrl.write_uncorrectable(r.nsid, r.start_block, r.blocks())?;
            eprintln!(
                "marked {} block(s) from LBA {} uncorrectable",
                r.blocks(),
                r.start_block
            );
        }
        Action::WriteZeroes { range: r } => {
            ctrl.write_zeroes(r.nsid, r.start_block, r.blocks())?;
            eprintln!("zeroed {} block(s) from LBA {}", r.blocks(), r.start_block);
        }
        Action::Dsm {
            nsid,
            slbs,
            blocks,
            ad,
        } => {
            if slbs.len() != blocks.len() || slbs.is_empty() || slbs.len() > 256 {
                return Err(CmdError::usage(format!(
                    "--slbs gives {} range(s) and --blocks {}: give the same number, 1 to 256",
                    slbs.len(),
                    blocks.len()
                )));
            }
            let ranges: Vec<nvme_spec::DsmRange> = slbs
                .iter()
                .zip(&blocks)
                .map(|(&slba, &blocks)| nvme_spec::DsmRange {
                    attributes: 0,
                    blocks,
                    slba,
                })
                .collect();
            ctrl.dataset_management(nsid, &ranges, ad)?;
            eprintln!(
                "dataset management over {} range(s){}",
                ranges.len(),
                if ad { ", deallocated" } else { "" }
            );
        }
        Action::Flush { nsid } => {
            ctrl.flush(nsid)?;
            eprintln!("flushed namespace {nsid}");
        }
        Action::Compare { range: r, data } => {
            let bs = ctrl.identify_namespace(r.nsid)?.block_size();
            let buf = std::fs::read(&data)
                .map_err(|e| CmdError::usage(format!("cannot read {}: {e}", data.display())))?;
            let want = r.blocks() as u64 * bs;
            if buf.len() as u64 != want {
                return Err(CmdError::usage(format!(
                    "{} is {} bytes; --block-count {} compares {} block(s) of {bs} bytes = {want} bytes",
                    data.display(),
                    buf.len(),
                    r.block_count,
                    r.blocks()
                )));
            }
            let per = blocks_per_command(&ctrl, bs)?;
            for (i, chunk) in buf.chunks((bs * per) as usize).enumerate() {
                ctrl.compare(r.nsid, r.start_block + i as u64 * per, chunk, bs as u32)?;
            }
            eprintln!(
                "{} block(s) from LBA {} match {}",
                r.blocks(),
                r.start_block,
                data.display()
            );
        }
        Action::Wait { within } => {
            drive.wait_ready(within)?;
            eprintln!(
                "{} is up as {}",
                drive.locator.addr,
                drive.controller().device_name()
            );
        }
    }
    Ok(ExitCode::Passed)
}

#[derive(Serialize)]
struct FeatureValue {
    fid: u8,
    name: &'static str,
    value: u32,
}

fn wait_self_test(
    ctrl: &flash_tools::Controller,
    nsid: u32,
    code: u8,
    within: Duration,
    common: &Common,
) -> CmdResult {
    let bar = terminal_bar(100, "self-test");
    let end = flash_tools::wait::self_test(
        ctrl,
        nsid,
        code,
        flash_tools::wait::Bounds {
            deadline: Instant::now() + within,
            cancelled: &|| false,
            progress: &mut |pct| {
                if let Some(b) = &bar {
                    b.set_position(pct as u64);
                }
            },
        },
    )?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match end {
        flash_tools::wait::SelfTestEnd::Finished(latest) => {
            if common.json {
                output::json(&latest);
            } else {
                output::table(&latest);
            }
            Ok(if latest.result == self_test_result::COMPLETED {
                ExitCode::Passed
            } else {
                ExitCode::Failed
            })
        }
        flash_tools::wait::SelfTestEnd::NoResult => Err(CmdError::new(
            ExitCode::Failed,
            anyhow::anyhow!(
                "the drive shows no self-test running and no result in its self-test log"
            ),
        )),
        flash_tools::wait::SelfTestEnd::Stopped { last_percent, .. } => Err(CmdError::new(
            ExitCode::TimedOut,
            anyhow::anyhow!(
                "the self-test did not finish within {} (last at {last_percent}%); it was aborted",
                humantime::format_duration(within)
            ),
        )),
    }
}

fn terminal_bar(len: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    Some(bar)
}

struct CliProgress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl firmware::Progress for CliProgress {
    fn event(&mut self, e: &UpdateEvent) {
        let line = format!(
            "[{:>6.1}s] {:<14} {}",
            e.elapsed_ms as f64 / 1000.0,
            e.step.to_string(),
            e.message
        );
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn download(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            if done == total {
                b.finish_and_clear();
            }
        } else if done == total {
            eprintln!(
                "[{:>6.1}s] download       {total} bytes sent",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// A flag Ctrl-C or SIGTERM sets: the update stops at its next safe point (between download chunks, before the
/// commit) instead of the process dying mid-transfer; after the commit it runs to a known state.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("nvme-flash: stopping the update at its next safe point");
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}

/// How `update` can power-cycle the drive: `--power-cycle-cmd`, or a simulated drive's own power switch.
fn power_cycle_for(addr: &DeviceAddr, cmd: Option<String>) -> Option<PowerCycle> {
    if let Some(cmd) = cmd {
        return Some(PowerCycle {
            describe: format!("`{cmd}`"),
            run: Arc::new(move || {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .output()
                    .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "`{cmd}` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            }),
        });
    }
    let DeviceAddr::Sim(dir) = addr else {
        return None;
    };
    let dir = dir.clone();
    Some(PowerCycle {
        describe: format!("the simulated drive's power switch ({})", dir.display()),
        run: Arc::new(move || {
            SimController::open(&dir)
                .and_then(|s| s.power_cycle())
                .map_err(|e| e.to_string())
        }),
    })
}

fn update(drive: &mut Drive, image: &[u8], opts: &UpdateOptions, common: &Common) -> CmdResult {
    let mut progress = CliProgress {
        bar: terminal_bar(image.len() as u64, "download"),
        started: Instant::now(),
    };
    let report = firmware::update(drive, image, opts, &mut progress);
    if common.json {
        output::json(&report);
    } else {
        outln!("{report}");
    }
    Ok(
        match (&report.outcome, report.failure.as_ref().map(|f| f.kind)) {
            (UpdateResult::Updated | UpdateResult::Staged, _) => ExitCode::Passed,
            (_, Some(FailureKind::BadInput)) => ExitCode::Usage,
            (_, Some(FailureKind::Unreachable | FailureKind::ResetUnavailable)) => {
                ExitCode::Infrastructure
            }
            (_, Some(FailureKind::Timeout | FailureKind::Cancelled)) => ExitCode::TimedOut,
            _ => ExitCode::Failed,
        },
    )
}

/// Object-safe "print as JSON or table" for the `show` helper.
mod erased {
    use serde::Serialize;

    pub trait Show {
        fn json(&self);
        fn table(&self);
    }
    impl<T: Serialize> Show for T {
        fn json(&self) {
            crate::output::json(self)
        }
        fn table(&self) {
            crate::output::table(self)
        }
    }
}
