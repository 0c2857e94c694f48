//! What a long-running command answers on its health listener: `/health`
//! (the process is alive) and `/ready` (it is doing its job), each ready
//! check with its reason, so a probe's failure says what to look at.

use serde::Serialize;

/// One condition of readiness, with why it holds or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok,
            detail: detail.into(),
        }
    }
}

/// Something a command exposes to `/ready`: its checks as of now.
pub trait Probe: Send + Sync + 'static {
    fn checks(&self) -> Vec<Check>;
}

/// The body of `/ready`: ready when every check holds.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

impl Readiness {
    pub fn of(probe: &dyn Probe) -> Self {
        let checks = probe.checks();
        Self {
            ready: !checks.is_empty() && checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// The wait before retry number `attempt` (from 1) while an outage lasts:
/// 1, 2, 4 … up to 30 s, never past the `left` of the retry budget. Ingest
/// and `lake run` back off alike, so their logs read alike.
pub fn retry_delay(attempt: u32, left: std::time::Duration) -> std::time::Duration {
    const MAX: std::time::Duration = std::time::Duration::from_secs(30);
    std::time::Duration::from_secs(1 << attempt.saturating_sub(1).min(5))
        .min(MAX)
        .min(left)
}

/// A duration as people read it in a check's detail: `2.1s`, `3m 5s`.
pub fn age(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{}m {}s", duration.as_secs() / 60, duration.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Check>);

    impl Probe for Fixed {
        fn checks(&self) -> Vec<Check> {
            self.0.clone()
        }
    }

    #[test]
    fn retries_back_off_to_thirty_seconds_within_the_budget() {
        use std::time::Duration;
        let long = Duration::from_secs(600);
        let waits: Vec<u64> = (1..=8).map(|a| retry_delay(a, long).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            retry_delay(6, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn ready_only_when_every_check_holds() {
        let ok = Check::new("catalog", true, "answered");
        let down = Check::new("brokers", false, "0 of 1 brokers up");
        assert!(Readiness::of(&Fixed(vec![ok.clone()])).ready);
        assert!(!Readiness::of(&Fixed(vec![ok, down])).ready);
        // Nothing checked yet is not ready.
        assert!(!Readiness::of(&Fixed(Vec::new())).ready);
    }
}
