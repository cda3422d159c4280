//! The agent link as bytes: whatever arrives on the stream decodes as protobuf and converts to the model, or is
//! refused with an error naming the field; what converts encodes back to the same message.

use nvfarm_model::link::{FromAgent, ToAgent};
use nvfarm_proto::v1 as pb;
use prost::Message;

/// The first byte picks the direction, the rest is the message.
pub fn agent_link(data: &[u8]) {
    let Some((&dir, body)) = data.split_first() else {
        return;
    };
    if dir % 2 == 0 {
        let Ok(m) = pb::AgentMessage::decode(body) else {
            return;
        };
        match FromAgent::try_from(m) {
            Ok(msg) => {
                let back = pb::AgentMessage::from(&msg);
                let bytes = back.encode_to_vec();
                let again = FromAgent::try_from(
                    pb::AgentMessage::decode(bytes.as_slice()).expect("re-decodes"),
                )
                .expect("what the controller accepted converts again");
                // Debug, not ==: a metric may be NaN, which equals nothing but prints the same.
                assert_eq!(
                    format!("{again:?}"),
                    format!("{msg:?}"),
                    "agent message round trip"
                );
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    } else {
        let Ok(m) = pb::ControllerMessage::decode(body) else {
            return;
        };
        match ToAgent::try_from(m) {
            Ok(msg) => {
                let back = pb::ControllerMessage::from(&msg);
                let again =
                    ToAgent::try_from(back).expect("what the agent accepted converts again");
                assert_eq!(
                    format!("{again:?}"),
                    format!("{msg:?}"),
                    "controller message round trip"
                );
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
