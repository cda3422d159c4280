//! What drives answer: every NVMe structure parser and the status decoder. A drive (or a broken one) can return
//! any bytes, of any length; each parser reads them without panicking, what it parsed encodes back into bytes
//! that parse to the same thing, and the views built on it (accessors, JSON) hold.

use nvme_spec::identify::parse_namespace_list;
use nvme_spec::log_page::{
    EffectsLog, ErrorLog, ErrorLogEntry, FirmwareSlotLog, SanitizeStatus, SelfTestLog, SmartLog,
};
use nvme_spec::{IdentifyController, IdentifyNamespace, Status};

/// Parses `$data` as `$ty`, checks it survives encode → parse, and returns it. Text fields compare without their
/// trailing padding: a drive may end a string with NULs or spaces, the encoder always pads with spaces.
macro_rules! round_trip {
    ($ty:ty, $data:expr) => {{
        let parsed = <$ty>::parse($data);
        let again = <$ty>::parse(&parsed.to_bytes());
        assert_eq!(
            unpadded(&again),
            unpadded(&parsed),
            "{} does not survive encode and parse",
            stringify!($ty)
        );
        parsed
    }};
}

/// `x` as JSON with every string's trailing spaces removed.
fn unpadded<T: serde::Serialize>(x: &T) -> serde_json::Value {
    fn trim(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(s.trim_end_matches(' ').to_string()),
            Value::Array(a) => Value::Array(a.into_iter().map(trim).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, trim(v))).collect()),
            other => other,
        }
    }
    trim(serde_json::to_value(x).expect("parsed structures render as JSON"))
}

/// Every parser on the same bytes (each reads its own layout).
pub fn structures(data: &[u8]) {
    let c = round_trip!(IdentifyController, data);
    let _ = (
        c.serial(),
        c.model(),
        c.firmware_revision(),
        c.firmware_slots(),
        c.slot1_read_only(),
        c.activation_without_reset(),
        c.supports_firmware_commands(),
        c.max_transfer_bytes(),
        c.firmware_update_granularity(),
        c.version_string(),
    );
    serde_json::to_string(&c).expect("identify controller renders as JSON");

    let n = round_trip!(IdentifyNamespace, data);
    let _ = (n.current_lba_format(), n.block_size(), n.size_bytes());
    assert!(
        n.block_size().is_power_of_two(),
        "block size {}",
        n.block_size()
    );
    serde_json::to_string(&n).expect("identify namespace renders as JSON");

    let ids = parse_namespace_list(data);
    assert!(ids.len() <= 1024 && ids.iter().all(|&id| id != 0));

    let smart = round_trip!(SmartLog, data);
    let _ = smart.temperature_celsius();
    serde_json::to_string(&smart).expect("SMART renders as JSON");

    let slots = round_trip!(FirmwareSlotLog, data);
    assert!(slots.active_slot() <= 7);
    assert!(slots
        .next_active_slot()
        .is_none_or(|s| (1..=7).contains(&s)));
    for n in 0..=8 {
        let _ = slots.revision(n);
    }
    let report = slots.report(data.first().copied().unwrap_or(3), data.len() % 2 == 0);
    assert!((1..=7).contains(&report.slots.len()));
    serde_json::to_string(&report).expect("slot report renders as JSON");

    let errors = ErrorLog::parse(data);
    for e in &errors.errors {
        let mut b = vec![0u8; 64];
        e.encode(&mut b);
        assert_eq!(&ErrorLogEntry::parse(&b), e, "error log entry round trip");
        let _ = e.status().name();
    }
    let _ = errors.valid().count();
    serde_json::to_string(&errors).expect("error log renders as JSON");

    let effects = EffectsLog::parse(data);
    assert_eq!(
        EffectsLog::parse(&effects.to_bytes()),
        effects,
        "EffectsLog round trip"
    );
    let _ = effects.entries();

    let selftest = round_trip!(SelfTestLog, data);
    serde_json::to_string(&selftest).expect("self-test log renders as JSON");

    let sanitize = round_trip!(SanitizeStatus, data);
    serde_json::to_string(&sanitize).expect("sanitize status renders as JSON");

    // Completion status fields: every 16-bit value decodes, names itself and keeps its parts.
    for pair in data.chunks(2) {
        let raw = u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        let s = Status::from_raw(raw);
        // Bit 15 is not part of the status (the phase tag, or nothing); the rest is exactly its parts.
        assert_eq!(s.raw(), raw & 0x7fff);
        let parts = u16::from(s.sc())
            | u16::from(s.sct()) << 8
            | u16::from(s.crd()) << 11
            | u16::from(s.more()) << 13
            | u16::from(s.dnr()) << 14;
        assert_eq!(parts, s.raw(), "a status is its SC, SCT, CRD, More and DNR");
        assert_eq!(Status::from_code(s.code()).code(), s.code());
        assert!(!s.name().is_empty());
        let shown = s.to_string();
        assert!(!shown.is_empty());
        let _ = (s.sc(), s.sct(), s.crd(), s.more(), s.dnr(), s.is_success());
        let _ = format!("{s:?}");
    }
}

/// The NVMe/TCP PDU reader as the target runs it: the first byte picks the connection's digests, the next 8 are a
/// common header that must pass its checks before the rest is read, and whatever decodes must encode back to a
/// PDU that decodes the same (the header checks never let a length through that the decoder cannot hold).
pub fn tcp_pdu(data: &[u8]) {
    use nvme_spec::tcp::{Digests, Header, Pdu};
    if data.len() < 9 {
        return;
    }
    let digests = Digests::from_byte(data[0]);
    let hdr: [u8; 8] = data[1..9].try_into().expect("8 bytes");
    let h = Header::parse(&hdr);
    if h.check(digests, 64 * 1024).is_err() {
        return;
    }
    let body = &data[9..];
    let want = h.plen as usize - 8;
    if body.len() < want {
        return;
    }
    let Ok(d) = Pdu::decode(&h, &body[..want], digests) else {
        return;
    };
    let again = d.pdu.encode(digests, 4);
    let h2 = Header::parse(again[..8].try_into().expect("a PDU has a common header"));
    h2.check(digests, 1 << 20)
        .unwrap_or_else(|e| panic!("re-encoded {:?} fails its own header check: {e}", d.pdu));
    let back = Pdu::decode(&h2, &again[8..], digests).expect("a re-encoded PDU decodes");
    assert!(back.data_digest_ok);
    assert_eq!(back.pdu, d.pdu, "encode/decode round trip");
}
