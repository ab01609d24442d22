//! `usage-bench [skills] [groups]`: the enterprise poller's usage pull for an org whose catalog has
//! `skills` plugins (default 5,000) used yesterday by `groups` RBAC groups each (default 20: 100,000 rows),
//! Analytics paced at the documented 60 requests a minute × 10. Ticks of 50 s run until the pull is done;
//! it reports the ticks, the time, the rows stored and the process's peak RSS growth over the pull (the
//! simulator's own rows are in place before the peak is reset).

use std::time::{Duration, Instant};

use anthropic_sim::enterprise::{RbacGroup, Usage};
use claresia_anthropic::Deadline;
use claresia_aws::LedgerEntry;
use claresia_domain::TenantSlug;
use claresia_tests::{TestEnv, ENTERPRISE_KEY, ENTERPRISE_ORG_ID};
use futures::stream::{self, StreamExt};

/// A /proc/self/status field, in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (skills, groups) = (arg(1, 5000), arg(2, 20));
    let env = TestEnv::enterprise_with(|c| {
        c.enterprise_limits.analytics_per_minute = 600.0;
        c.usage_poll_interval = Duration::ZERO;
    })
    .await;
    let (s, b) = env
        .connect_enterprise("ducati", ENTERPRISE_KEY, Some("bench"))
        .await;
    assert_eq!(s, 201, "connect: {b}");
    let hub = TenantSlug::parse("ducati").unwrap();
    let names: Vec<String> = (0..skills)
        .map(|i| format!("claresia-ducati-bench-{i:05}"))
        .collect();
    // The ledger that routes the rows (as publishes would have left it).
    let app = env.app.clone();
    stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (app, hub) = (app.clone(), hub.clone());
            async move {
                let entry = LedgerEntry {
                    name: name.clone(),
                    target: hub.clone(),
                    skill_id: format!("bench-{i:05}"),
                    remote_id: format!("plugin_bench{i:05}"),
                    removed_at: None,
                    content_hash: None,
                    claimed_at: None,
                    applied_access: None,
                };
                app.hub.put_ledger(&hub, &entry).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    // Yesterday's use: every skill by every group.
    let day = (time::OffsetDateTime::now_utc().date() - time::Duration::days(1)).to_string();
    {
        let mut st = env.sim.sim().lock();
        let e = st
            .orgs
            .get_mut(ENTERPRISE_ORG_ID)
            .and_then(|o| o.enterprise.as_mut())
            .unwrap();
        while e.groups.len() < groups {
            let n = e.groups.len();
            e.groups.push(RbacGroup {
                id: format!("rbac_group_01Bench{n:020}"),
                name: format!("Bench group {n}"),
                created_at: "2026-01-01T00:00:00Z".into(),
            });
        }
        let ids: Vec<String> = e.groups.iter().take(groups).map(|g| g.id.clone()).collect();
        for name in &names {
            for g in &ids {
                e.usage.insert(
                    (day.clone(), name.clone(), g.clone()),
                    Usage {
                        invocations: 3,
                        users: 2,
                    },
                );
            }
        }
    }
    // Peak RSS from here on is the pull's (Linux: writing 5 resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = status_kb("VmRSS:");
    let t = Instant::now();
    let mut ticks = 0;
    let status = loop {
        ticks += 1;
        env.app
            .poll_all(Deadline::after(Duration::from_secs(50)))
            .await
            .unwrap();
        let st = env.app.hub.poll_status(&hub).await.unwrap().unwrap();
        if st.usage_polled_at.is_some() || ticks >= 20 {
            break st;
        }
    };
    let took = t.elapsed();
    let peak = status_kb("VmHWM:");
    println!("usage-bench: {skills} skills × {groups} RBAC groups used yesterday ({} rows), Analytics at 600 requests a minute (the documented 60 × 10), ticks of 50 s", skills * groups);
    println!(
        "  pull               {:>8.2} s   over {ticks} tick(s), done: {}, {} rows stored",
        took.as_secs_f64(),
        status.usage_polled_at.is_some(),
        status.usage_rows.unwrap_or(0)
    );
    println!(
        "  peak RSS growth    {:>8.1} MiB  (process RSS {:.1} MiB before the pull, peak {:.1} MiB; the audit poller has 256 MB)",
        peak.saturating_sub(base) as f64 / 1024.0,
        base as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
