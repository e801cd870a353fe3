//! Group commit's waiting rule, shared by the background writers (request log, usage records):
//! take what is queued, then linger a little for a fuller batch, because a commit per few rows
//! costs more than the rows. A full batch, or a job that asks for it (a flush), ends the wait.

use std::time::Duration;

use tokio::sync::mpsc;

/// Receives into `jobs` (up to `max`): waits for the first job, then up to `linger` for more.
/// Returns how many arrived; 0 once the channel is closed and empty.
pub(crate) async fn fill<T>(
    rx: &mut mpsc::Receiver<T>,
    jobs: &mut Vec<T>,
    max: usize,
    linger: Duration,
    ends_wait: impl Fn(&T) -> bool,
) -> usize {
    let first = rx.recv_many(jobs, max).await;
    if first == 0 {
        return 0;
    }
    let until = tokio::time::Instant::now() + linger;
    while jobs.len() < max && !jobs.iter().any(&ends_wait) {
        let room = max - jobs.len();
        match tokio::time::timeout_at(until, rx.recv_many(jobs, room)).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    jobs.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_fuller_batch_until_full_flushed_or_late() {
        let (tx, mut rx) = mpsc::channel::<u32>(64);
        let mut jobs = Vec::new();
        // Late: what arrived within the linger, no more.
        let sender = tx.clone();
        tokio::spawn(async move {
            for i in 0..3 {
                let _ = sender.send(i).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let _ = sender.send(99).await;
        });
        let n = fill(&mut rx, &mut jobs, 8, Duration::from_millis(500), |_| false).await;
        assert_eq!((n, jobs.clone()), (3, vec![0, 1, 2]));
        jobs.clear();
        // A job that ends the wait (a flush) returns at once.
        let _ = tx.send(7).await;
        let started = tokio::time::Instant::now();
        fill(&mut rx, &mut jobs, 8, Duration::from_secs(10), |j| *j == 99).await;
        assert!(jobs.contains(&99));
        assert!(started.elapsed() < Duration::from_secs(10));
        jobs.clear();
        // Full: returns without waiting.
        for i in 0..8 {
            let _ = tx.send(i).await;
        }
        let started = tokio::time::Instant::now();
        assert_eq!(
            fill(&mut rx, &mut jobs, 8, Duration::from_secs(10), |_| false).await,
            8
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Closed and empty: 0.
        drop(tx);
        jobs.clear();
        assert_eq!(
            fill(&mut rx, &mut jobs, 8, Duration::from_secs(1), |_| false).await,
            0
        );
    }
}
