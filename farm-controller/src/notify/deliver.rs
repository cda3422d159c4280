//! One webhook's delivery task: POSTs its notices in order; a failed attempt (no connection, a timeout, a status
//! other than 2xx) is retried with exponential backoff up to the webhook's `retries`, then given up with a
//! warning naming the URL and what went wrong.

use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::Notice;
use crate::config::{Webhook, WebhookFormat};

/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before attempt `n + 1` (after `n` failed ones, `n` ≥ 1).
pub(super) fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(MAX_BACKOFF)
}

/// Delivers `rx`'s notices to `hook` until the notifier goes.
pub(super) async fn run(hook: Webhook, base: String, mut rx: Receiver<Notice>) {
    let client = match reqwest::Client::builder()
        .timeout(hook.timeout)
        .user_agent(concat!("nvfarm-controller/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %hook.url, "webhook disabled: cannot build an HTTP client: {e}");
            return;
        }
    };
    while let Some(n) = rx.recv().await {
        let body = match hook.format {
            WebhookFormat::Json => n.json(&base),
            WebhookFormat::Slack => serde_json::json!({ "text": n.text(&base) }),
        };
        let event = n.event().as_str();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let why = match client.post(&hook.url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::debug!(url = %hook.url, event, attempt, "webhook delivered");
                    break;
                }
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if attempt > hook.retries {
                tracing::warn!(url = %hook.url, event, attempts = attempt, "webhook notice given up: {why}");
                break;
            }
            let wait = backoff(attempt);
            tracing::info!(url = %hook.url, event, attempt, "webhook attempt failed ({why}); retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_stops_at_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
