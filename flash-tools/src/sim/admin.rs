//! Admin commands of the simulated controller: Identify, Get Log Page, Get/Set Features, Firmware Image
//! Download / Commit, Device Self-test, Format NVM and Sanitize.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use super::image;
use super::image::Behaviour;
use super::state::{RunningSelfTest, SlotImage, StagedRange};
use super::{fail, Ctx, SimError, NAMESPACE_FILE, SLOTS_DIR, STAGING_FILE};
use crate::transport::{Completion, Data};
use nvme_spec::command::{admin, cns, self_test_code, NSID_ALL};
use nvme_spec::features::{capability, fid, select};
use nvme_spec::identify::{
    OACS_FIRMWARE, OACS_FORMAT, OACS_SELF_TEST, ONCS_COMPARE, ONCS_DSM, ONCS_SAVE_SELECT,
    ONCS_WRITE_UNCORRECTABLE, ONCS_WRITE_ZEROES,
};
use nvme_spec::log_page::{self, critical_warning, effects, lid, self_test_result};
use nvme_spec::status::code;
use nvme_spec::{
    Command, EffectsLog, ErrorLogEntry, FirmwareSlotLog, IdentifyController, IdentifyNamespace,
    LbaFormat, PowerState, SanitizeStatus, SelfTestLog, SelfTestResult, SmartLog, Status,
};

/// Copies `bytes` (from `offset`) into a host read buffer.
fn reply(data: Data<'_>, bytes: &[u8], offset: usize) -> Completion {
    if let Data::FromDevice(buf) = data {
        buf.fill(0);
        let src = bytes.get(offset..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
    }
    Completion::ok(0)
}

pub(super) fn execute(
    ctx: &mut Ctx<'_>,
    cmd: &Command,
    data: Data<'_>,
) -> Result<Completion, SimError> {
    Ok(match cmd.opcode {
        admin::IDENTIFY => identify(ctx, cmd, data),
        admin::GET_LOG_PAGE => get_log_page(ctx, cmd, data),
        admin::GET_FEATURES => get_features(ctx, cmd),
        admin::SET_FEATURES => set_features(ctx, cmd),
        admin::FIRMWARE_DOWNLOAD => firmware_download(ctx, cmd, data)?,
        admin::FIRMWARE_COMMIT => firmware_commit(ctx, cmd)?,
        admin::DEVICE_SELF_TEST => self_test(ctx, cmd),
        admin::FORMAT_NVM => format(ctx, cmd)?,
        admin::SANITIZE => sanitize(ctx, cmd)?,
        _ => fail(code::INVALID_OPCODE),
    })
}

// ----- Identify ---------------------------------------------------------------------------------------------

pub(super) fn identify_controller(ctx: &Ctx<'_>) -> IdentifyController {
    let st = &ctx.st;
    let fw = &st.firmware;
    let edstt = st.timing.self_test_extended_ms.div_ceil(60_000).max(1) as u16;
    IdentifyController {
        vid: 0x1d1d,
        ssvid: 0x1d1d,
        sn: format!("{:<20}", st.serial),
        mn: format!("{:<40}", st.model),
        fr: format!("{:<8}", fw.running_revision),
        rab: 6,
        ieee: 0x1d1d00,
        mdts: fw.mdts,
        cntlid: 1,
        mtfa: (fw.mtfa_ms / 100).min(u16::MAX as u32) as u16,
        ver: 0x0001_0400,
        rtd3r: 1_000_000,
        rtd3e: 1_000_000,
        oaes: 1 << 9, // firmware activation notices
        cntrltype: 1,
        fguid: "00000000-0000-0000-0000-000000000000".into(),
        oacs: OACS_FORMAT | OACS_FIRMWARE | OACS_SELF_TEST,
        acl: 3,
        aerl: 3,
        frmw: (fw.slot1_readonly as u8)
            | (fw.slots << 1)
            | ((fw.activation_without_reset as u8) << 4),
        lpa: 0x07,
        elpe: 63,
        npss: 0,
        wctemp: 343,
        cctemp: 358,
        tnvmcap: st.namespace.size_bytes as u128,
        edstt,
        fwug: fw.fwug,
        sanicap: 0x7,
        sqes: 0x66,
        cqes: 0x44,
        nn: 1,
        // Exactly what `nvm` implements.
        oncs: ONCS_COMPARE
            | ONCS_WRITE_UNCORRECTABLE
            | ONCS_DSM
            | ONCS_WRITE_ZEROES
            | ONCS_SAVE_SELECT,
        // A volatile write cache only when the drive has one.
        vwc: (ctx.st.namespace.write_cache_bytes > 0) as u8,
        ocfs: 0,
        sgls: 0,
        subnqn: format!("nqn.2024-01.dev.nvfarm:sim:{}", st.serial),
        psds: vec![PowerState {
            max_power: 800,
            entry_lat: 5,
            exit_lat: 5,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The Namespace Identification Descriptor list: the EUI-64 and NGUID Identify Namespace reports, and the NVM
/// command set (a host keys a namespace by these; a fabrics host will not attach one without them).
fn ns_descriptors(ns: &IdentifyNamespace) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for (nidt, id) in [
        (1u8, hex::decode(&ns.eui64).unwrap_or_default()),
        (2, hex::decode(&ns.nguid).unwrap_or_default()),
        (4, vec![0]),
    ] {
        out.extend_from_slice(&[nidt, id.len() as u8, 0, 0]);
        out.extend_from_slice(&id);
    }
    out.resize(4096, 0);
    out
}

fn identify_namespace(ctx: &Ctx<'_>) -> IdentifyNamespace {
    let ns = &ctx.st.namespace;
    let blocks = ns.blocks();
    let allocated = fs::metadata(ctx.dir.join(NAMESPACE_FILE))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.blocks() * 512 / ns.block_size()).min(blocks)
        })
        .unwrap_or(blocks);
    let h = crc32fast::hash(ctx.st.serial.as_bytes()) as u64;
    IdentifyNamespace {
        nsze: blocks,
        ncap: blocks,
        nuse: allocated,
        nlbaf: 1,
        flbas: ns.lba_format,
        dlfeat: 1,
        nvmcap: ns.size_bytes as u128,
        npwg: 7,
        npwa: 7,
        npdg: 7,
        npda: 7,
        eui64: format!("1d1d00{:010x}", h & 0xff_ffff_ffff),
        nguid: format!("1d1d0000000000000000{:012x}", h << 8 | 1),
        lbafs: vec![
            LbaFormat {
                ms: 0,
                ds: 9,
                rp: 2,
            },
            LbaFormat {
                ms: 0,
                ds: 12,
                rp: 0,
            },
        ],
        ..Default::default()
    }
}

fn identify(ctx: &mut Ctx<'_>, cmd: &Command, data: Data<'_>) -> Completion {
    match cmd.cns() {
        cns::CONTROLLER => reply(data, &identify_controller(ctx).to_bytes(), 0),
        cns::NAMESPACE if cmd.nsid == 1 || cmd.nsid == NSID_ALL => {
            reply(data, &identify_namespace(ctx).to_bytes(), 0)
        }
        cns::NAMESPACE => fail(code::INVALID_NAMESPACE),
        cns::NS_DESCRIPTORS if cmd.nsid == 1 => {
            reply(data, &ns_descriptors(&identify_namespace(ctx)), 0)
        }
        cns::NS_DESCRIPTORS => fail(code::INVALID_NAMESPACE),
        cns::ACTIVE_NAMESPACES => {
            let mut list = vec![0u8; 4096];
            if cmd.nsid < 1 {
                list[0..4].copy_from_slice(&1u32.to_le_bytes());
            }
            reply(data, &list, 0)
        }
        _ => fail(code::INVALID_FIELD),
    }
}

// ----- Get Log Page -----------------------------------------------------------------------------------------

fn smart(ctx: &Ctx<'_>) -> SmartLog {
    let st = &ctx.st;
    let c = &st.counters;
    let units = |bytes: u128| (bytes / 512).div_ceil(1000);
    let mut cw = c.critical_warning;
    if st.firmware.running_failed {
        cw |= critical_warning::RELIABILITY_DEGRADED;
    }
    let temp = st.temperature_k(ctx.now);
    if temp >= 343 {
        cw |= critical_warning::TEMPERATURE;
    }
    SmartLog {
        critical_warning: cw,
        temperature: temp,
        avail_spare: 100,
        spare_thresh: 10,
        percent_used: c.percent_used,
        data_units_read: units(c.bytes_read),
        data_units_written: units(c.bytes_written),
        host_read_commands: c.host_read_commands,
        host_write_commands: c.host_write_commands,
        controller_busy_time: c.busy_ms / 60_000,
        power_cycles: c.power_cycles,
        power_on_hours: st.power_on_hours(ctx.now) as u128,
        unsafe_shutdowns: c.unsafe_shutdowns,
        media_errors: c.media_errors,
        num_err_log_entries: st.error_count as u128,
        temperature_sensor_1: Some(temp),
        ..Default::default()
    }
}

fn slot_log(ctx: &Ctx<'_>) -> FirmwareSlotLog {
    let fw = &ctx.st.firmware;
    let mut log = FirmwareSlotLog {
        afi: fw.active_slot | (fw.next_slot.unwrap_or(0) << 4),
        ..Default::default()
    };
    for s in 1..=fw.slots {
        log.frs[s as usize - 1] = fw.image(s).map(|i| i.revision.clone());
    }
    log
}

fn effects_log() -> EffectsLog {
    let mut log = EffectsLog::default();
    let s = effects::CSUPP;
    for op in [
        admin::GET_LOG_PAGE,
        admin::IDENTIFY,
        admin::GET_FEATURES,
        admin::FIRMWARE_DOWNLOAD,
    ] {
        log.admin[op as usize] = s;
    }
    log.admin[admin::SET_FEATURES as usize] = s | effects::CCC;
    log.admin[admin::FIRMWARE_COMMIT as usize] = s | effects::CCC;
    log.admin[admin::DEVICE_SELF_TEST as usize] = s;
    log.admin[admin::FORMAT_NVM as usize] = s | effects::LBCC | effects::NCC;
    log.admin[admin::SANITIZE as usize] = s | effects::LBCC;
    use nvme_spec::command::io;
    for op in [io::FLUSH, io::READ, io::COMPARE] {
        log.io[op as usize] = s;
    }
    for op in [
        io::WRITE,
        io::WRITE_ZEROES,
        io::WRITE_UNCORRECTABLE,
        io::DATASET_MANAGEMENT,
    ] {
        log.io[op as usize] = s | effects::LBCC;
    }
    log
}

fn self_test_log(ctx: &Ctx<'_>) -> SelfTestLog {
    let st = &ctx.st.self_test;
    let (current_operation, completion) = match &st.running {
        Some(r) => {
            let done = ctx.now.saturating_sub(r.started_ms) * 100 / r.duration_ms.max(1);
            (r.code, done.min(99) as u8)
        }
        None => (0, 0),
    };
    SelfTestLog {
        current_operation,
        completion,
        results: st
            .results
            .iter()
            .map(|r| SelfTestResult {
                result: r.result,
                result_text: self_test_result::name(r.result).into(),
                code: r.code,
                segment: r.segment,
                // NSIDV, FLBAV when an LBA is named, SCTV and SCV when a status code is.
                valid_diagnostic_info: 0x1
                    | if r.failing_lba.is_some() { 0x2 } else { 0 }
                    | if r.status_code_type != 0 || r.status_code != 0 {
                        0xc
                    } else {
                        0
                    },
                power_on_hours: r.power_on_hours,
                nsid: r.nsid,
                failing_lba: r.failing_lba.unwrap_or(0),
                status_code_type: r.status_code_type,
                status_code: r.status_code,
            })
            .collect(),
    }
}

fn get_log_page(ctx: &mut Ctx<'_>, cmd: &Command, data: Data<'_>) -> Completion {
    let bytes = match cmd.log_id() {
        lid::ERROR => {
            let mut b = vec![0u8; 64 * log_page::ERROR_ENTRY_LEN];
            for (i, e) in ctx.st.errors.iter().enumerate() {
                ErrorLogEntry {
                    error_count: e.error_count,
                    sqid: e.sqid,
                    cmdid: e.cmdid,
                    status_field: e.status,
                    lba: e.lba,
                    nsid: e.nsid,
                    parm_error_location: e.parm_error_location,
                    ..Default::default()
                }
                .encode(&mut b[i * 64..(i + 1) * 64]);
            }
            b
        }
        lid::SMART => smart(ctx).to_bytes(),
        lid::FIRMWARE_SLOT => slot_log(ctx).to_bytes(),
        lid::COMMANDS_EFFECTS => effects_log().to_bytes(),
        lid::SELF_TEST => self_test_log(ctx).to_bytes(),
        lid::SANITIZE_STATUS => SanitizeStatus {
            sprog: 0xffff,
            sstat: ctx.st.sanitize_sstat,
            scdw10: ctx.st.sanitize_cdw10,
        }
        .to_bytes(),
        _ => return fail(code::INVALID_LOG_PAGE),
    };
    let offset = cmd.log_offset();
    if offset % 4 != 0 || offset > bytes.len() as u64 {
        return fail(code::INVALID_FIELD);
    }
    reply(data, &bytes, offset as usize)
}

// ----- Features ---------------------------------------------------------------------------------------------

fn default_feature(id: u8) -> Option<u32> {
    Some(match id {
        fid::ARBITRATION => 0,
        fid::POWER_MANAGEMENT => 0,
        fid::TEMPERATURE_THRESHOLD => 343,
        fid::ERROR_RECOVERY => 0,
        fid::VOLATILE_WRITE_CACHE => 1,
        fid::NUMBER_OF_QUEUES => (63 << 16) | 63,
        fid::INTERRUPT_COALESCING => 0,
        fid::WRITE_ATOMICITY => 0,
        fid::ASYNC_EVENT_CONFIG => 0,
        _ => return None,
    })
}

fn get_features(ctx: &mut Ctx<'_>, cmd: &Command) -> Completion {
    let id = cmd.feature_id();
    let Some(default) = default_feature(id) else {
        return fail(code::INVALID_FIELD);
    };
    let value = match cmd.feature_select() {
        select::CURRENT => ctx.st.features_current.get(&id).copied().unwrap_or(default),
        select::DEFAULT => default,
        select::SAVED => ctx.st.features_saved.get(&id).copied().unwrap_or(default),
        select::SUPPORTED_CAPABILITIES if id == fid::NUMBER_OF_QUEUES => 0,
        select::SUPPORTED_CAPABILITIES => capability::SAVEABLE | capability::CHANGEABLE,
        _ => return fail(code::INVALID_FIELD),
    };
    Completion::ok(value)
}

fn set_features(ctx: &mut Ctx<'_>, cmd: &Command) -> Completion {
    let id = cmd.feature_id();
    if default_feature(id).is_none() {
        return fail(code::INVALID_FIELD);
    }
    if id == fid::NUMBER_OF_QUEUES {
        return fail(code::FEATURE_NOT_CHANGEABLE);
    }
    ctx.st.features_current.insert(id, cmd.cdw11);
    if cmd.feature_save() {
        ctx.st.features_saved.insert(id, cmd.cdw11);
    }
    Completion::ok(cmd.cdw11)
}

// ----- Firmware ---------------------------------------------------------------------------------------------

fn firmware_download(
    ctx: &mut Ctx<'_>,
    cmd: &Command,
    data: Data<'_>,
) -> Result<Completion, SimError> {
    let (offset, len) = cmd.fw_download_range();
    let Data::ToDevice(bytes) = data else {
        return Ok(fail(code::INVALID_FIELD));
    };
    let fw = &ctx.st.firmware;
    let max = 4096u64 << fw.mdts;
    let gran = if fw.fwug == 0xff {
        4
    } else {
        fw.fwug as u64 * 4096
    };
    if bytes.len() as u64 != len || len > max || offset % gran != 0 {
        return Ok(fail(code::INVALID_FIELD));
    }
    if offset == 0 {
        // A download starting at offset 0 begins a new image.
        ctx.clear_staging();
    } else if ctx
        .st
        .firmware
        .staged
        .iter()
        .any(|r| offset < r.offset + r.len && r.offset < offset + len)
    {
        return Ok(fail(code::OVERLAPPING_RANGE));
    }
    let path = ctx.dir.join(STAGING_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SimError::Io {
            path: path.clone(),
            source,
        })?;
    f.write_all_at(bytes, offset)
        .map_err(|source| SimError::Io { path, source })?;
    ctx.st.firmware.staged.push(StagedRange { offset, len });
    Ok(Completion::ok(0))
}

/// The staged image, if the downloaded portions cover `0..end` without gaps.
fn staged_image(ctx: &Ctx<'_>) -> Result<Option<Vec<u8>>, SimError> {
    let mut ranges = ctx.st.firmware.staged.clone();
    if ranges.is_empty() {
        return Ok(None);
    }
    ranges.sort_by_key(|r| r.offset);
    let mut end = 0;
    for r in &ranges {
        if r.offset != end {
            return Ok(Some(vec![])); // a gap: certainly not a valid image
        }
        end = r.offset + r.len;
    }
    let path = ctx.dir.join(STAGING_FILE);
    let mut img = fs::read(&path).map_err(|source| SimError::Io { path, source })?;
    img.truncate(end as usize);
    Ok(Some(img))
}

fn firmware_commit(ctx: &mut Ctx<'_>, cmd: &Command) -> Result<Completion, SimError> {
    let action = cmd.fw_commit_action();
    if action > 3 {
        return Ok(fail(code::INVALID_FIELD)); // boot partitions are not supported
    }
    let staged = staged_image(ctx)?;
    // Whatever happens next, the downloaded portions are consumed by this commit.
    ctx.clear_staging();
    let fw = &ctx.st.firmware;
    let uses_download = matches!(action, 0 | 1) || (action == 3 && staged.is_some());
    let mut slot = cmd.fw_slot();
    if slot == 0 {
        slot = if uses_download {
            match (1..=fw.slots).find(|&s| s != fw.active_slot && !(s == 1 && fw.slot1_readonly)) {
                Some(s) => s,
                None if !(fw.active_slot == 1 && fw.slot1_readonly) => fw.active_slot,
                None => return Ok(fail(code::INVALID_FIRMWARE_SLOT)),
            }
        } else {
            fw.active_slot
        };
    }
    if slot > fw.slots || (uses_download && slot == 1 && fw.slot1_readonly) {
        return Ok(fail(code::INVALID_FIRMWARE_SLOT));
    }
    if uses_download {
        let Some(mut img) = staged else {
            return Ok(fail(code::INVALID_FIRMWARE_IMAGE));
        };
        image::strip_padding(&mut img);
        let header = match image::parse(&img) {
            Ok(h) => h,
            Err(_) => return Ok(fail(code::INVALID_FIRMWARE_IMAGE)),
        };
        if header.model.as_deref().is_some_and(|m| m != ctx.st.model) {
            return Ok(fail(code::INVALID_FIRMWARE_IMAGE));
        }
        let path = ctx.dir.join(SLOTS_DIR).join(format!("slot{slot}.img"));
        fs::write(&path, &img).map_err(|source| SimError::Io { path, source })?;
        ctx.st.firmware.images[slot as usize - 1] = Some(SlotImage {
            revision: header.revision,
            behaviour: header.behaviour,
            behaviour_ms: match header.behaviour_ms {
                0 => header.behaviour.default_ms(),
                ms => ms,
            },
            len: img.len() as u64,
            crc32: header.crc32,
        });
    } else if ctx.st.firmware.image(slot).is_none() {
        return Ok(fail(code::INVALID_FIRMWARE_SLOT));
    }
    use super::state::ResetRequirement;
    match action {
        0 => Ok(Completion::ok(0)),
        1 | 2 => {
            ctx.st.firmware.next_slot = Some(slot);
            // Committed; the status says which reset activates it (success: a controller reset does).
            Ok(match ctx.st.firmware.activation_reset {
                ResetRequirement::Controller => Completion::ok(0),
                ResetRequirement::Subsystem => {
                    Completion::status(Status::from_code(code::FW_NEEDS_SUBSYSTEM_RESET))
                }
                ResetRequirement::Conventional => {
                    Completion::status(Status::from_code(code::FW_NEEDS_CONVENTIONAL_RESET))
                }
            })
        }
        _ => {
            let takes_ms = ctx.st.firmware.image(slot).map_or(0, |i| {
                if i.behaviour == Behaviour::SlowBoot {
                    i.behaviour_ms as u64
                } else {
                    ctx.st.timing.boot_ms
                }
            });
            let mtfa = ctx.st.firmware.mtfa_ms as u64;
            if ctx.st.firmware.activation_without_reset && mtfa > 0 && takes_ms > mtfa {
                // The image is in its slot; activating it now would take longer than MTFA: the host commits
                // it again for activation at a reset.
                Ok(Completion::status(Status::from_code(
                    code::FW_NEEDS_MAX_TIME_VIOLATION,
                )))
            } else if ctx.st.firmware.activation_without_reset {
                ctx.activate(slot)?;
                Ok(Completion::ok(0))
            } else {
                use super::state::ResetRequirement::*;
                ctx.st.firmware.next_slot = Some(slot);
                Ok(Completion::status(Status::from_code(
                    match ctx.st.firmware.activation_reset {
                        Controller => code::FW_NEEDS_CONTROLLER_RESET,
                        Conventional => code::FW_NEEDS_CONVENTIONAL_RESET,
                        Subsystem => code::FW_NEEDS_SUBSYSTEM_RESET,
                    },
                )))
            }
        }
    }
}

// ----- Self-test, Format, Sanitize --------------------------------------------------------------------------

fn self_test(ctx: &mut Ctx<'_>, cmd: &Command) -> Completion {
    if !(cmd.nsid == 0 || cmd.nsid == 1 || cmd.nsid == NSID_ALL) {
        return fail(code::INVALID_NAMESPACE);
    }
    match cmd.self_test_code() {
        c @ (self_test_code::SHORT | self_test_code::EXTENDED) => {
            if ctx.st.self_test.running.is_some() {
                return Completion::status(Status::from_code(code::SELF_TEST_IN_PROGRESS));
            }
            let t = &ctx.st.timing;
            let duration_ms = if c == self_test_code::SHORT {
                t.self_test_short_ms
            } else {
                t.self_test_extended_ms
            };
            ctx.st.self_test.running = Some(RunningSelfTest {
                code: c,
                nsid: cmd.nsid,
                started_ms: ctx.now,
                duration_ms,
            });
            Completion::ok(0)
        }
        self_test_code::ABORT => {
            ctx.abort_self_test(self_test_result::ABORTED_BY_COMMAND);
            Completion::ok(0)
        }
        _ => fail(code::INVALID_FIELD),
    }
}

fn erase_namespace(ctx: &mut Ctx<'_>) -> Result<(), SimError> {
    // Nothing cached survives an erase.
    super::cache::drop_all(ctx);
    let path = ctx.dir.join(NAMESPACE_FILE);
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| SimError::Io {
            path: path.clone(),
            source,
        })?;
    f.set_len(0).map_err(|source| SimError::Io {
        path: path.clone(),
        source,
    })?;
    f.set_len(ctx.st.namespace.size_bytes)
        .map_err(|source| SimError::Io { path, source })?;
    Ok(())
}

fn format(ctx: &mut Ctx<'_>, cmd: &Command) -> Result<Completion, SimError> {
    if !(cmd.nsid == 1 || cmd.nsid == NSID_ALL) {
        return Ok(fail(code::INVALID_NAMESPACE));
    }
    if cmd.format_lbaf() > 1 {
        return Ok(fail(code::INVALID_FORMAT));
    }
    if cmd.format_ses() > 2 {
        return Ok(fail(code::INVALID_FIELD));
    }
    ctx.abort_self_test(self_test_result::ABORTED_BY_FORMAT);
    erase_namespace(ctx)?;
    ctx.st.namespace.lba_format = cmd.format_lbaf();
    ctx.st.dirty = false;
    Ok(Completion::ok(0))
}

/// Sanitize Status SSTAT bit 8: no user data written since the last sanitize.
pub(super) const SSTAT_GLOBAL_DATA_ERASED: u16 = 1 << 8;

fn sanitize(ctx: &mut Ctx<'_>, cmd: &Command) -> Result<Completion, SimError> {
    use nvme_spec::command::sanitize_action::{
        BLOCK_ERASE, CRYPTO_ERASE, EXIT_FAILURE_MODE, OVERWRITE,
    };
    match cmd.sanitize_action() {
        EXIT_FAILURE_MODE => Ok(Completion::ok(0)),
        BLOCK_ERASE | OVERWRITE | CRYPTO_ERASE => {
            ctx.abort_self_test(self_test_result::ABORTED_BY_SANITIZE);
            erase_namespace(ctx)?;
            // Completed; for an overwrite the passes done (OWPC, CDW10 7:4, 0 = 16) in bits 7:3; and Global Data
            // Erased until something writes user data again.
            let passes = if cmd.sanitize_action() == OVERWRITE {
                match (cmd.cdw10 >> 4) & 0xf {
                    0 => 16,
                    n => n as u16,
                }
            } else {
                0
            };
            ctx.st.sanitize_sstat = 1 | (passes << 3) | SSTAT_GLOBAL_DATA_ERASED;
            ctx.st.sanitize_cdw10 = cmd.cdw10;
            ctx.st.dirty = false;
            Ok(Completion::ok(0))
        }
        _ => Ok(fail(code::INVALID_FIELD)),
    }
}
