//! The Identify data structures, one responsibility at ~950 lines because each of their ~130 spec fields is
//! declared, documented, parsed and encoded at its offset.
//!
//! Identify Controller (CNS 01h) and Identify Namespace (CNS 00h) data structures.
//!
//! Each structure parses from and encodes to the 4096-byte buffer the spec defines. Field names, order and JSON
//! shapes follow nvme-cli's `id-ctrl -o json` / `id-ns -o json` (strings untrimmed, 128-bit values as decimal
//! strings, `fguid` as a UUID, `eui64`/`nguid` as hex) so the two tools' output can be compared field by field.

use serde::{Deserialize, Serialize};

use crate::bytes::{
    ascii_at, bytes_at, put_ascii, put_bytes, put_u128, put_u16, put_u24, put_u32, put_u64, put_u8,
    u128_at, u128_string, u16_at, u24_at, u32_at, u64_at, u8_at,
};

/// Size of every Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;

/// One Power State Descriptor (32 bytes at 2048 + 32 * n).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerState {
    /// Maximum power in centiwatts (or 0.0001 W units when `flags` bit 0 is set).
    pub max_power: u16,
    /// Max Power Scale (bit 0) and Non-Operational State (bit 1).
    pub flags: u8,
    /// Entry latency (ENLAT), microseconds.
    pub entry_lat: u32,
    /// Exit latency (EXLAT), microseconds.
    pub exit_lat: u32,
    /// Relative read throughput (RRT).
    pub read_tput: u8,
    /// Relative read latency (RRL).
    pub read_lat: u8,
    /// Relative write throughput (RWT).
    pub write_tput: u8,
    /// Relative write latency (RWL).
    pub write_lat: u8,
    /// Idle power (IDLP).
    pub idle_power: u16,
    /// Idle power scale (IPS).
    pub idle_scale: u8,
    /// Active power (ACTP).
    pub active_power: u16,
    /// Active power workload (APW).
    pub active_power_work: u8,
    /// Active power scale (APS).
    pub active_scale: u8,
}

impl PowerState {
    fn parse(b: &[u8]) -> Self {
        PowerState {
            max_power: u16_at(b, 0),
            flags: u8_at(b, 3),
            entry_lat: u32_at(b, 4),
            exit_lat: u32_at(b, 8),
            read_tput: u8_at(b, 12) & 0x1f,
            read_lat: u8_at(b, 13) & 0x1f,
            write_tput: u8_at(b, 14) & 0x1f,
            write_lat: u8_at(b, 15) & 0x1f,
            idle_power: u16_at(b, 16),
            idle_scale: (u8_at(b, 18) >> 6) & 0x3,
            active_power: u16_at(b, 20),
            active_power_work: u8_at(b, 22) & 0x7,
            active_scale: (u8_at(b, 22) >> 6) & 0x3,
        }
    }
    fn encode(&self, b: &mut [u8]) {
        put_u16(b, 0, self.max_power);
        put_u8(b, 3, self.flags);
        put_u32(b, 4, self.entry_lat);
        put_u32(b, 8, self.exit_lat);
        put_u8(b, 12, self.read_tput & 0x1f);
        put_u8(b, 13, self.read_lat & 0x1f);
        put_u8(b, 14, self.write_tput & 0x1f);
        put_u8(b, 15, self.write_lat & 0x1f);
        put_u16(b, 16, self.idle_power);
        put_u8(b, 18, (self.idle_scale & 0x3) << 6);
        put_u16(b, 20, self.active_power);
        put_u8(
            b,
            22,
            (self.active_power_work & 0x7) | ((self.active_scale & 0x3) << 6),
        );
    }
}

/// Identify Controller data structure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyController {
    /// PCI Vendor ID (VID).
    pub vid: u16,
    /// PCI Subsystem Vendor ID (SSVID).
    pub ssvid: u16,
    /// Serial number, space padded as stored.
    pub sn: String,
    /// Model number, space padded.
    pub mn: String,
    /// Firmware revision of the running firmware, space padded.
    pub fr: String,
    /// Recommended Arbitration Burst (RAB).
    pub rab: u8,
    /// IEEE OUI Identifier (IEEE).
    pub ieee: u32,
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities (CMIC).
    pub cmic: u8,
    /// Maximum Data Transfer Size as a power of two of the minimum page size (0 = no limit).
    pub mdts: u8,
    /// Controller ID (CNTLID).
    pub cntlid: u16,
    /// Version (VER): major in bits 31:16, minor in 15:8, tertiary in 7:0.
    pub ver: u32,
    /// RTD3 Resume Latency (RTD3R), microseconds.
    pub rtd3r: u32,
    /// RTD3 Entry Latency (RTD3E), microseconds.
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported (OAES).
    pub oaes: u32,
    /// Controller Attributes (CTRATT).
    pub ctratt: u32,
    /// Read Recovery Levels Supported (RRLS).
    pub rrls: u16,
    /// Controller Type (CNTRLTYPE): 1 I/O, 2 discovery, 3 administrative.
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier (FGUID), as a UUID.
    pub fguid: String,
    /// Command Retry Delay Time 1 (CRDT1), 100 ms units.
    pub crdt1: u16,
    /// Command Retry Delay Time 2 (CRDT2), 100 ms units.
    pub crdt2: u16,
    /// Command Retry Delay Time 3 (CRDT3), 100 ms units.
    pub crdt3: u16,
    /// NVM Subsystem Report (NVMSR).
    pub nvmsr: u8,
    /// VPD Write Cycle Information (VWCI).
    pub vwci: u8,
    /// Management Endpoint Capabilities (MEC).
    pub mec: u8,
    /// Optional Admin Command Support; bit 2 = Firmware Commit / Image Download.
    pub oacs: u16,
    /// Abort Command Limit (ACL), 0's based.
    pub acl: u8,
    /// Asynchronous Event Request Limit (AERL), 0's based.
    pub aerl: u8,
    /// Firmware Updates: bit 0 slot 1 read-only, bits 3:1 number of slots, bit 4 activation without reset.
    pub frmw: u8,
    /// Log Page Attributes (LPA).
    pub lpa: u8,
    /// Error Log Page Entries (ELPE), 0's based.
    pub elpe: u8,
    /// Number of Power States Support (NPSS), 0's based.
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration (AVSCC).
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes (APSTA).
    pub apsta: u8,
    /// Warning Composite Temperature Threshold (WCTEMP), kelvin.
    pub wctemp: u16,
    /// Critical Composite Temperature Threshold (CCTEMP), kelvin.
    pub cctemp: u16,
    /// Maximum Time for Firmware Activation (MTFA), 100 ms units.
    pub mtfa: u16,
    /// Host Memory Buffer Preferred Size (HMPRE), 4 KiB units.
    pub hmpre: u32,
    /// Host Memory Buffer Minimum Size (HMMIN), 4 KiB units.
    pub hmmin: u32,
    /// Total NVM Capacity (TNVMCAP), bytes.
    #[serde(with = "u128_string")]
    pub tnvmcap: u128,
    /// Unallocated NVM Capacity (UNVMCAP), bytes.
    #[serde(with = "u128_string")]
    pub unvmcap: u128,
    /// Replay Protected Memory Block Support (RPMBS).
    pub rpmbs: u32,
    /// Extended Device Self-test Time (EDSTT), minutes.
    pub edstt: u16,
    /// Device Self-test Options (DSTO).
    pub dsto: u8,
    /// Firmware Update Granularity in 4 KiB units (0 = not reported, 0xFF = no restriction).
    pub fwug: u8,
    /// Keep Alive Support (KAS), 100 ms units.
    pub kas: u16,
    /// Host Controlled Thermal Management Attributes (HCTMA).
    pub hctma: u16,
    /// Minimum Thermal Management Temperature (MNTMT), kelvin.
    pub mntmt: u16,
    /// Maximum Thermal Management Temperature (MXTMT), kelvin.
    pub mxtmt: u16,
    /// Sanitize Capabilities (SANICAP).
    pub sanicap: u32,
    /// Host Memory Buffer Minimum Descriptor Entry Size (HMMINDS).
    pub hmminds: u32,
    /// Host Memory Maximum Descriptors Entries (HMMAXD).
    pub hmmaxd: u16,
    /// NVM Set Identifier Maximum (NSETIDMAX).
    pub nsetidmax: u16,
    /// Endurance Group Identifier Maximum (ENDGIDMAX).
    pub endgidmax: u16,
    /// ANA Transition Time (ANATT), seconds.
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities (ANACAP).
    pub anacap: u8,
    /// ANA Group Identifier Maximum (ANAGRPMAX).
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers (NANAGRPID).
    pub nanagrpid: u32,
    /// Persistent Event Log Size (PELS), 64 KiB units.
    pub pels: u32,
    /// Domain Identifier (DOMAINID).
    pub domainid: u16,
    /// Max Endurance Group Capacity (MEGCAP), bytes.
    #[serde(with = "u128_string")]
    pub megcap: u128,
    /// Submission Queue Entry Size (SQES): required and maximum, as powers of two.
    pub sqes: u8,
    /// Completion Queue Entry Size (CQES): required and maximum, as powers of two.
    pub cqes: u8,
    /// Maximum Outstanding Commands (MAXCMD).
    pub maxcmd: u16,
    /// Number of Namespaces (NN): the largest namespace ID.
    pub nn: u32,
    /// Optional NVM Command Support (ONCS).
    pub oncs: u16,
    /// Fused Operation Support (FUSES).
    pub fuses: u16,
    /// Format NVM Attributes (FNA).
    pub fna: u8,
    /// Volatile Write Cache (VWC).
    pub vwc: u8,
    /// Atomic Write Unit Normal (AWUN), blocks, 0's based.
    pub awun: u16,
    /// Atomic Write Unit Power Fail (AWUPF), blocks, 0's based.
    pub awupf: u16,
    /// I/O Command Set Vendor Specific Command Configuration (ICSVSCC).
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities (NWPC).
    pub nwpc: u8,
    /// Atomic Compare & Write Unit (ACWU), blocks, 0's based.
    pub acwu: u16,
    /// Optional Copy Formats Supported (OCFS).
    pub ocfs: u16,
    /// SGL Support (SGLS).
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces (MNAN).
    pub mnan: u32,
    /// Maximum Domain Namespace Attachments (MAXDNA).
    #[serde(with = "u128_string")]
    pub maxdna: u128,
    /// Maximum I/O Controller Namespace Attachments (MAXCNA).
    pub maxcna: u32,
    /// NVM Subsystem NVMe Qualified Name (SUBNQN).
    pub subnqn: String,
    /// I/O Queue Command Capsule Supported Size (IOCCSZ), fabrics, 16-byte units.
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size (IORCSZ), fabrics, 16-byte units.
    pub iorcsz: u32,
    /// In Capsule Data Offset (ICDOFF), fabrics.
    pub icdoff: u16,
    /// Fabrics Controller Attributes (FCATT).
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors (MSDBD), fabrics.
    pub msdbd: u8,
    /// Optional Fabric Commands Support (OFCS).
    pub ofcs: u16,
    /// Power state descriptors 0..=npss.
    pub psds: Vec<PowerState>,
}

/// OACS bit 2: the controller supports Firmware Commit and Firmware Image Download.
pub const OACS_FIRMWARE: u16 = 1 << 2;
/// ONCS bit 0: Compare.
pub const ONCS_COMPARE: u16 = 1 << 0;
/// ONCS bit 1: Write Uncorrectable.
pub const ONCS_WRITE_UNCORRECTABLE: u16 = 1 << 1;
/// ONCS bit 2: Dataset Management.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit 3: Write Zeroes.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// ONCS bit 4: the Save field of Set Features and the Select field of Get Features.
pub const ONCS_SAVE_SELECT: u16 = 1 << 4;
/// OACS bit 1: Format NVM.
pub const OACS_FORMAT: u16 = 1 << 1;
/// OACS bit 4: Device Self-test.
pub const OACS_SELF_TEST: u16 = 1 << 4;

fn uuid_string(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let clean: String = s.chars().filter(|c| *c != '-').collect();
    if let Ok(v) = hex::decode(clean) {
        let n = v.len().min(16);
        out[..n].copy_from_slice(&v[..n]);
    }
    out
}

impl IdentifyController {
    /// Parses the 4096-byte Identify Controller data structure.
    pub fn parse(b: &[u8]) -> Self {
        let npss = u8_at(b, 263);
        IdentifyController {
            vid: u16_at(b, 0),
            ssvid: u16_at(b, 2),
            sn: ascii_at(b, 4, 20),
            mn: ascii_at(b, 24, 40),
            fr: ascii_at(b, 64, 8),
            rab: u8_at(b, 72),
            ieee: u24_at(b, 73),
            cmic: u8_at(b, 76),
            mdts: u8_at(b, 77),
            cntlid: u16_at(b, 78),
            ver: u32_at(b, 80),
            rtd3r: u32_at(b, 84),
            rtd3e: u32_at(b, 88),
            oaes: u32_at(b, 92),
            ctratt: u32_at(b, 96),
            rrls: u16_at(b, 100),
            cntrltype: u8_at(b, 111),
            fguid: uuid_string(&bytes_at(b, 112, 16)),
            crdt1: u16_at(b, 128),
            crdt2: u16_at(b, 130),
            crdt3: u16_at(b, 132),
            nvmsr: u8_at(b, 253),
            vwci: u8_at(b, 254),
            mec: u8_at(b, 255),
            oacs: u16_at(b, 256),
            acl: u8_at(b, 258),
            aerl: u8_at(b, 259),
            frmw: u8_at(b, 260),
            lpa: u8_at(b, 261),
            elpe: u8_at(b, 262),
            npss,
            avscc: u8_at(b, 264),
            apsta: u8_at(b, 265),
            wctemp: u16_at(b, 266),
            cctemp: u16_at(b, 268),
            mtfa: u16_at(b, 270),
            hmpre: u32_at(b, 272),
            hmmin: u32_at(b, 276),
            tnvmcap: u128_at(b, 280),
            unvmcap: u128_at(b, 296),
            rpmbs: u32_at(b, 312),
            edstt: u16_at(b, 316),
            dsto: u8_at(b, 318),
            fwug: u8_at(b, 319),
            kas: u16_at(b, 320),
            hctma: u16_at(b, 322),
            mntmt: u16_at(b, 324),
            mxtmt: u16_at(b, 326),
            sanicap: u32_at(b, 328),
            hmminds: u32_at(b, 332),
            hmmaxd: u16_at(b, 336),
            nsetidmax: u16_at(b, 338),
            endgidmax: u16_at(b, 340),
            anatt: u8_at(b, 342),
            anacap: u8_at(b, 343),
            anagrpmax: u32_at(b, 344),
            nanagrpid: u32_at(b, 348),
            pels: u32_at(b, 352),
            domainid: u16_at(b, 356),
            megcap: u128_at(b, 368),
            sqes: u8_at(b, 512),
            cqes: u8_at(b, 513),
            maxcmd: u16_at(b, 514),
            nn: u32_at(b, 516),
            oncs: u16_at(b, 520),
            fuses: u16_at(b, 522),
            fna: u8_at(b, 524),
            vwc: u8_at(b, 525),
            awun: u16_at(b, 526),
            awupf: u16_at(b, 528),
            icsvscc: u8_at(b, 530),
            nwpc: u8_at(b, 531),
            acwu: u16_at(b, 532),
            ocfs: u16_at(b, 534),
            sgls: u32_at(b, 536),
            mnan: u32_at(b, 540),
            maxdna: u128_at(b, 544),
            maxcna: u32_at(b, 560),
            subnqn: ascii_at(b, 768, 256),
            ioccsz: u32_at(b, 1792),
            iorcsz: u32_at(b, 1796),
            icdoff: u16_at(b, 1800),
            fcatt: u8_at(b, 1802),
            msdbd: u8_at(b, 1803),
            ofcs: u16_at(b, 1804),
            psds: (0..=npss as usize)
                .map(|i| PowerState::parse(&bytes_at(b, 2048 + 32 * i, 32)))
                .collect(),
        }
    }

    /// Encodes into the 4096-byte layout (the simulated controller answers Identify with this).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put_u16(&mut b, 0, self.vid);
        put_u16(&mut b, 2, self.ssvid);
        put_ascii(&mut b, 4, 20, &self.sn);
        put_ascii(&mut b, 24, 40, &self.mn);
        put_ascii(&mut b, 64, 8, &self.fr);
        put_u8(&mut b, 72, self.rab);
        put_u24(&mut b, 73, self.ieee);
        put_u8(&mut b, 76, self.cmic);
        put_u8(&mut b, 77, self.mdts);
        put_u16(&mut b, 78, self.cntlid);
        put_u32(&mut b, 80, self.ver);
        put_u32(&mut b, 84, self.rtd3r);
        put_u32(&mut b, 88, self.rtd3e);
        put_u32(&mut b, 92, self.oaes);
        put_u32(&mut b, 96, self.ctratt);
        put_u16(&mut b, 100, self.rrls);
        put_u8(&mut b, 111, self.cntrltype);
        put_bytes(&mut b, 112, &uuid_bytes(&self.fguid));
        put_u16(&mut b, 128, self.crdt1);
        put_u16(&mut b, 130, self.crdt2);
        put_u16(&mut b, 132, self.crdt3);
        put_u8(&mut b, 253, self.nvmsr);
        put_u8(&mut b, 254, self.vwci);
        put_u8(&mut b, 255, self.mec);
        put_u16(&mut b, 256, self.oacs);
        put_u8(&mut b, 258, self.acl);
        put_u8(&mut b, 259, self.aerl);
        put_u8(&mut b, 260, self.frmw);
        put_u8(&mut b, 261, self.lpa);
        put_u8(&mut b, 262, self.elpe);
        put_u8(&mut b, 263, self.npss);
        put_u8(&mut b, 264, self.avscc);
        put_u8(&mut b, 265, self.apsta);
        put_u16(&mut b, 266, self.wctemp);
        put_u16(&mut b, 268, self.cctemp);
        put_u16(&mut b, 270, self.mtfa);
        put_u32(&mut b, 272, self.hmpre);
        put_u32(&mut b, 276, self.hmmin);
        put_u128(&mut b, 280, self.tnvmcap);
        put_u128(&mut b, 296, self.unvmcap);
        put_u32(&mut b, 312, self.rpmbs);
        put_u16(&mut b, 316, self.edstt);
        put_u8(&mut b, 318, self.dsto);
        put_u8(&mut b, 319, self.fwug);
        put_u16(&mut b, 320, self.kas);
        put_u16(&mut b, 322, self.hctma);
        put_u16(&mut b, 324, self.mntmt);
        put_u16(&mut b, 326, self.mxtmt);
        put_u32(&mut b, 328, self.sanicap);
        put_u32(&mut b, 332, self.hmminds);
        put_u16(&mut b, 336, self.hmmaxd);
        put_u16(&mut b, 338, self.nsetidmax);
        put_u16(&mut b, 340, self.endgidmax);
        put_u8(&mut b, 342, self.anatt);
        put_u8(&mut b, 343, self.anacap);
        put_u32(&mut b, 344, self.anagrpmax);
        put_u32(&mut b, 348, self.nanagrpid);
        put_u32(&mut b, 352, self.pels);
        put_u16(&mut b, 356, self.domainid);
        put_u128(&mut b, 368, self.megcap);
        put_u8(&mut b, 512, self.sqes);
        put_u8(&mut b, 513, self.cqes);
        put_u16(&mut b, 514, self.maxcmd);
        put_u32(&mut b, 516, self.nn);
        put_u16(&mut b, 520, self.oncs);
        put_u16(&mut b, 522, self.fuses);
        put_u8(&mut b, 524, self.fna);
        put_u8(&mut b, 525, self.vwc);
        put_u16(&mut b, 526, self.awun);
        put_u16(&mut b, 528, self.awupf);
        put_u8(&mut b, 530, self.icsvscc);
        put_u8(&mut b, 531, self.nwpc);
        put_u16(&mut b, 532, self.acwu);
        put_u16(&mut b, 534, self.ocfs);
        put_u32(&mut b, 536, self.sgls);
        put_u32(&mut b, 540, self.mnan);
        put_u128(&mut b, 544, self.maxdna);
        put_u32(&mut b, 560, self.maxcna);
        let nqn = self.subnqn.as_bytes();
        put_bytes(&mut b, 768, &nqn[..nqn.len().min(256)]);
        put_u32(&mut b, 1792, self.ioccsz);
        put_u32(&mut b, 1796, self.iorcsz);
        put_u16(&mut b, 1800, self.icdoff);
        put_u8(&mut b, 1802, self.fcatt);
        put_u8(&mut b, 1803, self.msdbd);
        put_u16(&mut b, 1804, self.ofcs);
        for (i, ps) in self.psds.iter().take(32).enumerate() {
            ps.encode(&mut b[2048 + 32 * i..2048 + 32 * (i + 1)]);
        }
        b
    }

    /// Serial number without padding.
    pub fn serial(&self) -> &str {
        self.sn.trim()
    }
    /// The model number without padding.
    pub fn model(&self) -> &str {
        self.mn.trim()
    }
    /// Running firmware revision without padding.
    pub fn firmware_revision(&self) -> &str {
        self.fr.trim()
    }
    /// Number of firmware slots (FRMW bits 3:1); a controller reporting 0 has one.
    pub fn firmware_slots(&self) -> u8 {
        ((self.frmw >> 1) & 0x7).max(1)
    }
    /// Whether firmware slot 1 is read-only (FRMW bit 0).
    pub fn slot1_read_only(&self) -> bool {
        self.frmw & 1 != 0
    }
    /// FRMW bit 4: Firmware Commit action 3 can activate without a reset.
    pub fn activation_without_reset(&self) -> bool {
        self.frmw & (1 << 4) != 0
    }
    /// Whether OACS advertises Firmware Commit and Firmware Image Download.
    pub fn supports_firmware_commands(&self) -> bool {
        self.oacs & OACS_FIRMWARE != 0
    }
    /// Maximum Time for Firmware Activation (MTFA, 100 ms units): `None` when the controller does not report it.
    pub fn max_time_for_activation(&self) -> Option<std::time::Duration> {
        (self.mtfa != 0).then(|| std::time::Duration::from_millis(self.mtfa as u64 * 100))
    }
    /// Maximum data transfer in bytes, assuming a 4 KiB minimum memory page size; `None` = no limit.
    pub fn max_transfer_bytes(&self) -> Option<u64> {
        (self.mdts != 0).then(|| 4096u64 << self.mdts.min(20))
    }
    /// Firmware update granularity in bytes: `None` when the controller does not report it, `Some(4)` when it
    /// has no restriction (FWUG = 0xFF).
    pub fn firmware_update_granularity(&self) -> Option<u64> {
        match self.fwug {
            0 => None,
            0xFF => Some(4),
            n => Some(n as u64 * 4096),
        }
    }
    /// NVMe version as "major.minor.tertiary".
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            self.ver >> 16,
            (self.ver >> 8) & 0xff,
            self.ver & 0xff
        )
    }
}

/// One LBA Format descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbaFormat {
    /// Metadata bytes per block.
    pub ms: u16,
    /// LBA data size as a power of two.
    pub ds: u8,
    /// Relative performance (0 best).
    pub rp: u8,
}

/// Identify Namespace data structure (NVM command set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyNamespace {
    /// Namespace Size (NSZE), logical blocks.
    pub nsze: u64,
    /// Namespace Capacity (NCAP), logical blocks.
    pub ncap: u64,
    /// Namespace Utilization (NUSE), logical blocks.
    pub nuse: u64,
    /// Namespace Features (NSFEAT).
    pub nsfeat: u8,
    /// Number of LBA formats, zero-based.
    pub nlbaf: u8,
    /// Formatted LBA size: bits 3:0 (and 6:5) select the LBA format.
    pub flbas: u8,
    /// Metadata Capabilities (MC).
    pub mc: u8,
    /// End-to-end Data Protection Capabilities (DPC).
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings (DPS).
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities (NMIC).
    pub nmic: u8,
    /// Reservation Capabilities (RESCAP).
    pub rescap: u8,
    /// Format Progress Indicator (FPI).
    pub fpi: u8,
    /// Deallocate Logical Block Features (DLFEAT).
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal (NAWUN).
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail (NAWUPF).
    pub nawupf: u16,
    /// Namespace Atomic Compare & Write Unit (NACWU).
    pub nacwu: u16,
    /// Namespace Atomic Boundary Size Normal (NABSN).
    pub nabsn: u16,
    /// Namespace Atomic Boundary Offset (NABO).
    pub nabo: u16,
    /// Namespace Atomic Boundary Size Power Fail (NABSPF).
    pub nabspf: u16,
    /// Namespace Optimal I/O Boundary (NOIOB).
    pub noiob: u16,
    /// NVM Capacity (NVMCAP), bytes.
    #[serde(with = "u128_string")]
    pub nvmcap: u128,
    /// Namespace Attributes (NSATTR).
    pub nsattr: u8,
    /// NVM Set Identifier (NVMSETID).
    pub nvmsetid: u16,
    /// Namespace Preferred Write Granularity (NPWG).
    pub npwg: u16,
    /// Namespace Preferred Write Alignment (NPWA).
    pub npwa: u16,
    /// Namespace Preferred Deallocate Granularity (NPDG).
    pub npdg: u16,
    /// Namespace Preferred Deallocate Alignment (NPDA).
    pub npda: u16,
    /// Namespace Optimal Write Size (NOWS).
    pub nows: u16,
    /// Maximum Single Source Range Length (MSSRL).
    pub mssrl: u16,
    /// Maximum Copy Length (MCL).
    pub mcl: u32,
    /// Maximum Source Range Count (MSRC).
    pub msrc: u8,
    /// Number of Unique Capability LBA Formats (NULBAF).
    pub nulbaf: u8,
    /// ANA Group Identifier (ANAGRPID).
    pub anagrpid: u32,
    /// Endurance Group Identifier (ENDGID).
    pub endgid: u16,
    /// IEEE Extended Unique Identifier (EUI64), hex.
    pub eui64: String,
    /// Namespace Globally Unique Identifier (NGUID), hex.
    pub nguid: String,
    /// LBA Format descriptors 0..=nlbaf.
    pub lbafs: Vec<LbaFormat>,
}

impl IdentifyNamespace {
    /// Parses the 4096-byte structure a controller returned (zero-filled past a short buffer).
    pub fn parse(b: &[u8]) -> Self {
        let nlbaf = u8_at(b, 25);
        IdentifyNamespace {
            nsze: u64_at(b, 0),
            ncap: u64_at(b, 8),
            nuse: u64_at(b, 16),
            nsfeat: u8_at(b, 24),
            nlbaf,
            flbas: u8_at(b, 26),
            mc: u8_at(b, 27),
            dpc: u8_at(b, 28),
            dps: u8_at(b, 29),
            nmic: u8_at(b, 30),
            rescap: u8_at(b, 31),
            fpi: u8_at(b, 32),
            dlfeat: u8_at(b, 33),
            nawun: u16_at(b, 34),
            nawupf: u16_at(b, 36),
            nacwu: u16_at(b, 38),
            nabsn: u16_at(b, 40),
            nabo: u16_at(b, 42),
            nabspf: u16_at(b, 44),
            noiob: u16_at(b, 46),
            nvmcap: u128_at(b, 48),
            npwg: u16_at(b, 64),
            npwa: u16_at(b, 66),
            npdg: u16_at(b, 68),
            npda: u16_at(b, 70),
            nows: u16_at(b, 72),
            mssrl: u16_at(b, 74),
            mcl: u32_at(b, 76),
            msrc: u8_at(b, 80),
            nulbaf: u8_at(b, 82),
            anagrpid: u32_at(b, 92),
            nsattr: u8_at(b, 99),
            nvmsetid: u16_at(b, 100),
            endgid: u16_at(b, 102),
            nguid: hex::encode(bytes_at(b, 104, 16)),
            eui64: hex::encode(bytes_at(b, 120, 8)),
            lbafs: (0..=nlbaf.min(63) as usize)
                .map(|i| {
                    let o = 128 + 4 * i;
                    LbaFormat {
                        ms: u16_at(b, o),
                        ds: u8_at(b, o + 2),
                        rp: u8_at(b, o + 3) & 0x3,
                    }
                })
                .collect(),
        }
    }

    /// Encodes the structure in the spec's 4096-byte layout (what the simulated controller returns).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put_u64(&mut b, 0, self.nsze);
        put_u64(&mut b, 8, self.ncap);
        put_u64(&mut b, 16, self.nuse);
        put_u8(&mut b, 24, self.nsfeat);
        put_u8(&mut b, 25, self.nlbaf);
        put_u8(&mut b, 26, self.flbas);
        put_u8(&mut b, 27, self.mc);
        put_u8(&mut b, 28, self.dpc);
        put_u8(&mut b, 29, self.dps);
        put_u8(&mut b, 30, self.nmic);
        put_u8(&mut b, 31, self.rescap);
        put_u8(&mut b, 32, self.fpi);
        put_u8(&mut b, 33, self.dlfeat);
        put_u16(&mut b, 34, self.nawun);
        put_u16(&mut b, 36, self.nawupf);
        put_u16(&mut b, 38, self.nacwu);
        put_u16(&mut b, 40, self.nabsn);
        put_u16(&mut b, 42, self.nabo);
        put_u16(&mut b, 44, self.nabspf);
        put_u16(&mut b, 46, self.noiob);
        put_u128(&mut b, 48, self.nvmcap);
        put_u16(&mut b, 64, self.npwg);
        put_u16(&mut b, 66, self.npwa);
        put_u16(&mut b, 68, self.npdg);
        put_u16(&mut b, 70, self.npda);
        put_u16(&mut b, 72, self.nows);
        put_u16(&mut b, 74, self.mssrl);
        put_u32(&mut b, 76, self.mcl);
        put_u8(&mut b, 80, self.msrc);
        put_u8(&mut b, 82, self.nulbaf);
        put_u32(&mut b, 92, self.anagrpid);
        put_u8(&mut b, 99, self.nsattr);
        put_u16(&mut b, 100, self.nvmsetid);
        put_u16(&mut b, 102, self.endgid);
        if let Ok(v) = hex::decode(&self.nguid) {
            put_bytes(&mut b, 104, &v[..v.len().min(16)]);
        }
        if let Ok(v) = hex::decode(&self.eui64) {
            put_bytes(&mut b, 120, &v[..v.len().min(8)]);
        }
        for (i, f) in self.lbafs.iter().take(64).enumerate() {
            let o = 128 + 4 * i;
            put_u16(&mut b, o, f.ms);
            put_u8(&mut b, o + 2, f.ds);
            put_u8(&mut b, o + 3, f.rp & 0x3);
        }
        b
    }

    /// Index of the LBA format in use (FLBAS bits 3:0, with bits 6:5 as the upper bits).
    pub fn current_lba_format(&self) -> usize {
        ((self.flbas & 0xf) | ((self.flbas >> 5) & 0x3) << 4) as usize
    }
    /// Logical block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.lbafs
            .get(self.current_lba_format())
            .map(|f| 1u64 << f.ds.min(31))
            .unwrap_or(512)
    }
    /// Namespace size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.nsze.saturating_mul(self.block_size())
    }
}

/// Parses an Active Namespace ID list (CNS 02h): up to 1024 NSIDs, terminated by 0.
pub fn parse_namespace_list(b: &[u8]) -> Vec<u32> {
    (0..1024)
        .map(|i| u32_at(b, i * 4))
        .take_while(|&n| n != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer laid out by hand from the spec's byte offsets, independent of `to_bytes`.
    fn spec_controller() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x1af4u16.to_le_bytes());
        b[4..24].copy_from_slice(b"S6ABC123            ");
        b[24..64].copy_from_slice(b"NVFARM X1-1T                            ");
        b[64..72].copy_from_slice(b"1.2.3   ");
        b[72] = 6;
        b[73..76].copy_from_slice(&[0x00, 0x54, 0x52]);
        b[77] = 5;
        b[78..80].copy_from_slice(&7u16.to_le_bytes());
        b[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        b[111] = 1;
        b[112] = 0xab;
        b[127] = 0xcd;
        b[256..258].copy_from_slice(&0x0016u16.to_le_bytes());
        b[260] = 0b1_0111; // activation w/o reset, 3 slots, slot 1 read-only
        b[261] = 0x07;
        b[262] = 63;
        b[263] = 1; // two power states
        b[266..268].copy_from_slice(&343u16.to_le_bytes());
        b[268..270].copy_from_slice(&358u16.to_le_bytes());
        b[270..272].copy_from_slice(&50u16.to_le_bytes());
        b[280..296].copy_from_slice(&(1u128 << 70).to_le_bytes());
        b[316..318].copy_from_slice(&12u16.to_le_bytes());
        b[319] = 2;
        b[328..332].copy_from_slice(&0x7u32.to_le_bytes());
        b[368..384].copy_from_slice(&99u128.to_le_bytes());
        b[512] = 0x66;
        b[513] = 0x44;
        b[516..520].copy_from_slice(&1u32.to_le_bytes());
        b[520..522].copy_from_slice(&0x1du16.to_le_bytes());
        b[525] = 1;
        b[544..560].copy_from_slice(&5u128.to_le_bytes());
        b[768..790].copy_from_slice(b"nqn.2024-01.dev.nvfarm");
        b[1804..1806].copy_from_slice(&3u16.to_le_bytes());
        // PSD1: max power 2500, flags 1, entry 16, exit 4, rrt 3, apw 2, aps 1
        let p = 2048 + 32;
        b[p..p + 2].copy_from_slice(&2500u16.to_le_bytes());
        b[p + 3] = 1;
        b[p + 4..p + 8].copy_from_slice(&16u32.to_le_bytes());
        b[p + 8..p + 12].copy_from_slice(&4u32.to_le_bytes());
        b[p + 12] = 3;
        b[p + 18] = 2 << 6;
        b[p + 22] = 2 | (1 << 6);
        b
    }

    #[test]
    fn parses_every_controller_field_from_spec_offsets() {
        let id = IdentifyController::parse(&spec_controller());
        assert_eq!((id.vid, id.ssvid), (0x1b36, 0x1af4));
        assert_eq!(id.sn, "S6ABC123            ");
        assert_eq!(id.serial(), "S6ABC123");
        assert_eq!(id.model(), "NVFARM X1-1T");
        assert_eq!(id.fr, "1.2.3   ");
        assert_eq!(id.firmware_revision(), "1.2.3");
        assert_eq!(id.rab, 6);
        assert_eq!(id.ieee, 0x525400);
        assert_eq!(id.mdts, 5);
        assert_eq!(id.max_transfer_bytes(), Some(128 * 1024));
        assert_eq!(id.cntlid, 7);
        assert_eq!(id.version_string(), "1.4.0");
        assert_eq!(id.cntrltype, 1);
        assert_eq!(id.fguid, "ab000000-0000-0000-0000-0000000000cd");
        assert_eq!(id.oacs, 0x16);
        assert!(id.supports_firmware_commands());
        assert_eq!(id.firmware_slots(), 3);
        assert!(id.slot1_read_only());
        assert!(id.activation_without_reset());
        assert_eq!((id.lpa, id.elpe, id.npss), (7, 63, 1));
        assert_eq!((id.wctemp, id.cctemp, id.mtfa), (343, 358, 50));
        assert_eq!(id.tnvmcap, 1u128 << 70);
        assert_eq!(id.edstt, 12);
        assert_eq!(id.fwug, 2);
        assert_eq!(id.firmware_update_granularity(), Some(8192));
        assert_eq!(id.sanicap, 7);
        assert_eq!(id.megcap, 99);
        assert_eq!(
            (id.sqes, id.cqes, id.nn, id.oncs, id.vwc),
            (0x66, 0x44, 1, 0x1d, 1)
        );
        assert_eq!(id.maxdna, 5);
        assert_eq!(id.subnqn, "nqn.2024-01.dev.nvfarm");
        assert_eq!(id.ofcs, 3);
        assert_eq!(id.psds.len(), 2);
        let ps = &id.psds[1];
        assert_eq!(
            (ps.max_power, ps.flags, ps.entry_lat, ps.exit_lat),
            (2500, 1, 16, 4)
        );
        assert_eq!(
            (
                ps.read_tput,
                ps.idle_scale,
                ps.active_power_work,
                ps.active_scale
            ),
            (3, 2, 2, 1)
        );
    }

    #[test]
    fn controller_encoding_round_trips() {
        let id = IdentifyController::parse(&spec_controller());
        let again = IdentifyController::parse(&id.to_bytes());
        assert_eq!(id, again);
        assert_eq!(&id.to_bytes()[..], &spec_controller()[..]);
    }

    #[test]
    fn fwug_and_mdts_special_values() {
        let mut id = IdentifyController {
            fwug: 0xff,
            ..Default::default()
        };
        assert_eq!(id.firmware_update_granularity(), Some(4));
        id.fwug = 0;
        assert_eq!(id.firmware_update_granularity(), None);
        assert_eq!(id.max_transfer_bytes(), None);
        assert_eq!(id.firmware_slots(), 1);
    }

    #[test]
    fn json_matches_nvme_cli_shapes() {
        let id = IdentifyController::parse(&spec_controller());
        let v = serde_json::to_value(&id).unwrap();
        assert_eq!(v["sn"], "S6ABC123            ");
        assert_eq!(v["tnvmcap"], (1u128 << 70).to_string());
        assert_eq!(v["ieee"], 0x525400);
        assert_eq!(v["psds"][1]["max_power"], 2500);
    }

    #[test]
    fn parses_namespace_from_spec_offsets() {
        let mut b = vec![0u8; 4096];
        b[0..8].copy_from_slice(&131072u64.to_le_bytes());
        b[8..16].copy_from_slice(&131072u64.to_le_bytes());
        b[16..24].copy_from_slice(&1000u64.to_le_bytes());
        b[24] = 0x14;
        b[25] = 1;
        b[26] = 1;
        b[33] = 1;
        b[48..64].copy_from_slice(&(512u128 << 20).to_le_bytes());
        b[68..70].copy_from_slice(&7u16.to_le_bytes());
        b[82] = 0;
        b[92..96].copy_from_slice(&3u32.to_le_bytes());
        b[102..104].copy_from_slice(&1u16.to_le_bytes());
        b[104] = 0x11;
        b[119] = 0x22;
        b[120..128].copy_from_slice(&[0xaa, 0, 0, 0, 0, 0, 0, 0xbb]);
        b[128..132].copy_from_slice(&[0, 0, 9, 0]);
        b[132..136].copy_from_slice(&[8, 0, 12, 2]);
        let ns = IdentifyNamespace::parse(&b);
        assert_eq!((ns.nsze, ns.ncap, ns.nuse), (131072, 131072, 1000));
        assert_eq!((ns.nsfeat, ns.nlbaf, ns.flbas, ns.dlfeat), (0x14, 1, 1, 1));
        assert_eq!(ns.nvmcap, 512u128 << 20);
        assert_eq!(ns.npdg, 7);
        assert_eq!(ns.anagrpid, 3);
        assert_eq!(ns.endgid, 1);
        assert_eq!(ns.nguid, "11000000000000000000000000000022");
        assert_eq!(ns.eui64, "aa000000000000bb");
        assert_eq!(ns.lbafs.len(), 2);
        assert_eq!(
            ns.lbafs[1],
            LbaFormat {
                ms: 8,
                ds: 12,
                rp: 2
            }
        );
        assert_eq!(ns.current_lba_format(), 1);
        assert_eq!(ns.block_size(), 4096);
        assert_eq!(ns.size_bytes(), 131072 * 4096);
        assert_eq!(IdentifyNamespace::parse(&ns.to_bytes()), ns);
    }

    #[test]
    fn parses_namespace_list() {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&1u32.to_le_bytes());
        b[4..8].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(parse_namespace_list(&b), vec![1, 5]);
    }
}
