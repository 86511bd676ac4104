//! Two runs compared, for load-shape regression tests: `tapedeck report --baseline
//! old.json new.json`. The result is a report of the new run whose "recorded" side is the
//! baseline run's replayed side, so latency ratios, status mixes and gates read as
//! "new against baseline". Response differences are the new run's own.

use std::collections::HashMap;

use crate::{sort_by_severity, BaselineInfo, CompareSummary, ReplayReport};
use tapedeck_compare::CompareConfig;

/// The new run against the baseline run.
pub fn compare(old: &ReplayReport, old_path: &str, new: &ReplayReport, config: &CompareConfig) -> ReplayReport {
    let before: HashMap<&str, &crate::RouteReport> = old.routes.iter().map(|r| (r.route.as_str(), r)).collect();
    let mut report = new.clone();
    // A comparison, not a run: nothing in it to merge with other runs.
    report.stats = None;
    for r in &mut report.routes {
        r.against_baseline = true;
        let Some(o) = before.get(r.route.as_str()) else {
            r.recorded_ms = None;
            r.recorded_status.clear();
            r.p99_ratio = None;
            r.p99_flagged = false;
            r.first_message = None;
            r.answers = None;
            continue;
        };
        // Streams' message times against the baseline's too.
        let against = |mine: Option<crate::MessageTiming>, theirs: Option<crate::MessageTiming>| match (mine, theirs) {
            (Some(mut mine), Some(theirs)) => {
                mine.recorded_ms = theirs.replayed_ms;
                (mine.p99_ratio, mine.p99_flagged) = crate::p99_verdict(
                    Some(mine.recorded_ms),
                    Some(mine.replayed_ms),
                    mine.count.min(theirs.count),
                    config,
                );
                Some(mine)
            }
            _ => None,
        };
        r.first_message = against(r.first_message, o.first_message);
        r.answers = against(r.answers, o.answers);
        r.recorded_ms = o.replayed_ms;
        r.recorded_status = o.replayed_status.clone();
        (r.p99_ratio, r.p99_flagged) = crate::p99_verdict(r.recorded_ms, r.replayed_ms, r.count.min(o.count), config);
        if let (Some(mine), Some(theirs)) = (r.latency_buckets.as_mut(), o.latency_buckets.as_ref()) {
            mine.recorded = theirs.replayed.clone();
        }
    }
    sort_by_severity(&mut report.routes);
    if let Some(c) = report.compare.as_mut() {
        c.slower_routes = report.routes.iter().filter(|r| r.p99_flagged).count() as u64;
    } else {
        report.compare = Some(CompareSummary {
            slower_routes: report.routes.iter().filter(|r| r.p99_flagged).count() as u64,
            ..Default::default()
        });
    }
    if let (Some(mine), Some(theirs)) = (report.timeline.as_mut(), old.timeline.as_ref()) {
        if (mine.bucket_secs - theirs.bucket_secs).abs() < 1e-9 {
            mine.recorded = theirs.replayed.clone();
        }
    }
    report.intended_rps = old.achieved_rps;
    report.gates.clear();
    report.baseline = Some(BaselineInfo {
        path: old_path.to_string(),
        started_at: old.started_at.clone(),
        achieved_rps: old.achieved_rps,
        sent: old.sent,
        errors: old.errors.values().sum(),
    });
    report
}
