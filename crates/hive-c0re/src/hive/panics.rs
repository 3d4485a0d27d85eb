//! The operator hears of hive-c0re's own faults: each panic the daemon's
//! tasks report (`panics.rs`: an essential loop started again, a connection
//! closed) becomes an `internal_error` notification, at most one per task in
//! ten minutes, with how many there were since. One the store cannot take
//! (the database is what failed) goes to the webhooks around it.

use std::sync::Arc;

use hive_sh4re::notification::NotificationKind;

use super::Hive;
use crate::panics::Fault;

/// Tells the operator of the faults reported, as they come, until the hive shuts down.
pub async fn tell(hive: Arc<Hive>) {
    loop {
        let due = tokio::select! {
            due = hive.faults.next() => due,
            _ = hive.shutdown.cancelled() => return,
        };
        for fault in due {
            let text = notice(hive.node().as_str(), &fault);
            let kind = NotificationKind::InternalError;
            if let Err(e) = hive.notify_operator(kind, None, &text).await {
                tracing::warn!(
                    "could not store an {kind} notification, sent to the webhooks instead: {e}"
                );
                hive.alert_webhooks(kind, &text, || true).await;
            }
        }
    }
}

/// What the operator reads of a fault.
fn notice(node: &str, f: &Fault) -> String {
    let whose = f
        .agent
        .as_ref()
        .map(|a| format!(" ({a}'s)"))
        .unwrap_or_default();
    let times = if f.count > 1 {
        format!(" {} times since the last such notice, the last", f.count)
    } else {
        String::new()
    };
    let at = f
        .location
        .as_deref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    format!(
        "hive-c0re on node {node}: its task \"{task}\"{whose} panicked{times}{at}: {message}. \
         Then {then}. This is a bug of hive-c0re: its log has each such panic.",
        task = f.task,
        message = f.message,
        then = f.then,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panics::Faults;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// The `internal_error` notifications stored, once there are `n` (10 s at most).
    async fn told(hive: &Hive, n: usize) -> Vec<hive_sh4re::notification::Notification> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let all = hive.notifications(false, None).await.unwrap().notifications;
            let faults: Vec<_> = all
                .into_iter()
                .filter(|n| n.kind == NotificationKind::InternalError)
                .collect();
            if faults.len() >= n || tokio::time::Instant::now() > deadline {
                return faults;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_essential_loop_that_keeps_panicking_runs_again_and_is_told_once() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        hive.spawn_essential("fault notices", tell);
        let runs = Arc::new(AtomicU32::new(0));
        let (counted, steady) = (runs.clone(), Arc::new(tokio::sync::Notify::new()));
        let up = steady.clone();
        hive.spawn_essential("a test loop", move |hive| {
            let (n, up) = (counted.fetch_add(1, Ordering::SeqCst), up.clone());
            async move {
                assert!(n >= 4, "panic number {n}");
                // The fifth run is the one that lasts, as a healthy loop does.
                up.notify_one();
                hive.shutdown_token().cancelled().await;
            }
        });
        tokio::time::timeout(Duration::from_secs(10), steady.notified())
            .await
            .expect("the loop ran again after each of its four panics");
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        let notices = told(&hive, 1).await;
        // Long enough for a second notice to be stored, were there one.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let notices_after = told(&hive, 0).await;
        assert_eq!(notices_after.len(), 1, "{notices_after:?}");
        let text = &notices[0].text;
        assert!(text.contains("\"a test loop\""), "{text}");
        assert!(text.contains("panic number 0"), "{text}");
        assert!(text.contains("started again after a pause"), "{text}");
        assert_eq!(notices[0].agent, None);
        // The loop ends with the hive, and so does the task that tells.
        hive.shutdown_token().cancel();
        assert!(hive.wait_for_tasks(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_fault_the_store_reports_before_the_hive_runs_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        // As a writer of the store reports: through the store's own queue.
        let faults: Faults = hive.store.faults().clone();
        let panic = crate::panics::caught("store send writer", None, async { panic!("a bug") })
            .await
            .unwrap_err();
        faults.report("store send writer", None, &panic, "it is started again");
        hive.spawn_essential("fault notices", tell);
        let notices = told(&hive, 1).await;
        assert_eq!(notices.len(), 1);
        assert!(
            notices[0].text.contains("\"store send writer\""),
            "{notices:?}"
        );
        assert!(notices[0].text.contains("a bug"), "{notices:?}");
    }

    #[test]
    fn a_notice_says_whose_how_often_where_and_what_followed() {
        let f = Fault {
            task: "agent.sock connection",
            agent: Some(hive_sh4re::AgentName::parse("alice").unwrap()),
            message: "index out of bounds".to_owned(),
            location: Some("crates/hive-c0re/src/x.rs:1:2".to_owned()),
            then: "the connection is closed".to_owned(),
            count: 3,
        };
        assert_eq!(
            notice("n1", &f),
            "hive-c0re on node n1: its task \"agent.sock connection\" (alice's) panicked 3 times \
             since the last such notice, the last at crates/hive-c0re/src/x.rs:1:2: index out of \
             bounds. Then the connection is closed. This is a bug of hive-c0re: its log has each \
             such panic."
        );
    }
}
