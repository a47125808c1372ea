//! Where a continued release's canary is read from. Pure: the ledger's
//! [`ResumePoint`], the time and policy's bound in; the answer a value.
//!
//! A release continued after its agent was away (a restart, a late
//! takeover) resumes at the release time it reached. Read from its recorded
//! time 0, its remaining ticks judge samples as old as its start; after a
//! short gap that is what keeps each tick on its own release time, after a
//! long one it would promote a canary on how it did hours ago. So past
//! policy's `source.resume_within_s` the canary is read again from now.

use crate::ledger::ResumePoint;

/// Time 0 of a continued release's canary samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryFrom {
    /// Where it was read from before: each tick reads its own release time.
    Recorded {
        /// Ms since the epoch.
        from_ms: i64,
    },
    /// Unobserved longer than policy allows: read so that the release time
    /// it reached is now, its window the canary's latest samples.
    Again {
        /// Ms since the epoch.
        from_ms: i64,
        /// Seconds since it was last observed.
        unobserved_s: u64,
    },
}

impl CanaryFrom {
    /// Time 0 of the canary's samples, ms since the epoch.
    pub fn from_ms(&self) -> i64 {
        match self {
            CanaryFrom::Recorded { from_ms } | CanaryFrom::Again { from_ms, .. } => *from_ms,
        }
    }
}

/// Where release `p`'s canary is read from at `now_ms`, with policy's
/// `resume_within_s`. An ended release is judged no more: it keeps where it was read from.
pub fn canary_from(p: &ResumePoint, now_ms: i64, resume_within_s: u64) -> CanaryFrom {
    let unobserved_s = u64::try_from(now_ms.saturating_sub(p.seen_ms) / 1000).unwrap_or(0);
    if p.ended || unobserved_s <= resume_within_s {
        return CanaryFrom::Recorded { from_ms: p.canary_from_ms };
    }
    let reached_ms = i64::try_from(p.reached_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let from_ms = now_ms.saturating_sub(reached_ms).max(p.canary_from_ms);
    CanaryFrom::Again { from_ms, unobserved_s }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Started at 1,000 s, read from there, reached 300 s, last seen at 1,300 s.
    fn point() -> ResumePoint {
        ResumePoint {
            started_ms: 1_000_000,
            canary_from_ms: 1_000_000,
            reached_s: 300,
            seen_ms: 1_300_000,
            ended: false,
        }
    }

    #[test]
    fn a_gap_within_the_bound_keeps_the_recorded_time_0() {
        let at = |gap_s: i64| canary_from(&point(), 1_300_000 + gap_s * 1000, 900);
        assert_eq!(at(0), CanaryFrom::Recorded { from_ms: 1_000_000 });
        assert_eq!(at(900), CanaryFrom::Recorded { from_ms: 1_000_000 });
        // A clock behind the record is no gap.
        assert_eq!(at(-60), CanaryFrom::Recorded { from_ms: 1_000_000 });
    }

    #[test]
    fn a_longer_gap_reads_the_canary_again_so_the_time_reached_is_now() {
        let now_ms = 1_300_000 + 7_200_000;
        let got = canary_from(&point(), now_ms, 900);
        assert_eq!(got, CanaryFrom::Again { from_ms: now_ms - 300_000, unobserved_s: 7_200 });
        assert_eq!(got.from_ms(), now_ms - 300_000);
    }

    #[test]
    fn an_ended_release_is_never_read_again_however_long_ago() {
        let ended = ResumePoint { ended: true, ..point() };
        assert_eq!(canary_from(&ended, 1_300_000 + 86_400_000, 900), CanaryFrom::Recorded { from_ms: 1_000_000 });
    }

    #[test]
    fn a_release_read_again_before_keeps_that_time_0_until_the_next_long_gap() {
        let again = ResumePoint { canary_from_ms: 9_000_000, seen_ms: 9_400_000, reached_s: 400, ..point() };
        assert_eq!(canary_from(&again, 9_500_000, 900), CanaryFrom::Recorded { from_ms: 9_000_000 });
        let later = canary_from(&again, 9_400_000 + 3_600_000, 900);
        assert_eq!(later, CanaryFrom::Again { from_ms: 9_400_000 + 3_600_000 - 400_000, unobserved_s: 3_600 });
    }

    #[test]
    fn the_canary_is_never_read_from_before_where_it_was() {
        // A release time reached past the gap (a clock stepped back): never earlier than before.
        let odd = ResumePoint { reached_s: 100_000, ..point() };
        let got = canary_from(&odd, 1_300_000 + 1_000_000, 900);
        assert_eq!(got.from_ms(), 1_000_000);
    }
}
