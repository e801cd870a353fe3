//! The request log's timing and outcomes: what a resilience test reads to count attempts, space
//! them, and see that an abandoned upstream call was really cancelled.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use support::{VENDORS, chat, http, send};
use testkit::emulator::{Outcome, Recorded};
use testkit::{Emulator, EmulatorConfig, Fault, Vendor};

/// How long a settled outcome may take to show up.
const SETTLE: Duration = Duration::from_secs(1);

async fn outcome(em: &Emulator, index: usize) -> Result<Recorded> {
    em.wait_for_outcome(index, SETTLE)
        .await
        .with_context(|| format!("request {index} never settled: {:?}", em.requests()))
}

#[tokio::test]
async fn whole_and_streamed_answers_are_completed_for_every_vendor() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let mut index = 0;
    for vendor in VENDORS {
        for stream in [false, true] {
            let (status, _) = send(chat(&http, &em, vendor, stream, false)).await?;
            ensure!(status == 200);
            let r = outcome(&em, index).await?;
            ensure!(
                r.vendor == vendor && r.outcome == Outcome::Completed,
                "{r:?}"
            );
            ensure!(r.ended_ms.is_some_and(|e| e >= r.at_ms), "{r:?}");
            index += 1;
        }
    }
    // Error answers are complete answers too.
    em.fail_next(Fault::status(503));
    let (status, _) = send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    ensure!(status == 503 && outcome(&em, index).await?.outcome == Outcome::Completed);
    Ok(())
}

#[tokio::test]
async fn a_stream_is_completed_only_when_its_body_ends() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    em.fail_next(Fault::Stall {
        after_events: 2,
        ms: 200,
    });
    let resp = chat(&http, &em, Vendor::Openai, true, false).send().await?;
    // Headers are out; the body is still stalled.
    ensure!(em.requests()[0].outcome == Outcome::InFlight);
    resp.bytes().await?;
    let r = outcome(&em, 0).await?;
    ensure!(r.outcome == Outcome::Completed);
    ensure!(r.ended_ms.is_some_and(|e| e - r.at_ms >= 200), "{r:?}");
    Ok(())
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_attempt() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    for (i, vendor) in VENDORS.into_iter().enumerate() {
        em.fail_next(Fault::Stall {
            after_events: 1,
            ms: 10_000,
        });
        let resp = chat(&http, &em, vendor, true, false).send().await?;
        let mut body = resp.bytes_stream();
        let first = tokio::time::timeout(SETTLE, body.next()).await?;
        ensure!(first.is_some_and(|c| c.is_ok()), "{vendor:?}");
        let left_at = em.requests()[i].at_ms;
        drop(body);
        let r = outcome(&em, i).await?;
        ensure!(r.outcome == Outcome::Cancelled, "{vendor:?}: {r:?}");
        // Noticed at once, not when the stall would have ended.
        ensure!(r.ended_ms.is_some_and(|e| e - left_at < 500), "{r:?}");
    }
    Ok(())
}

/// Hyper drops the handler future when the client closes the connection while no response has
/// started (it reads for EOF mid-message): the attempt is cancelled within milliseconds.
#[tokio::test]
async fn a_client_leaving_during_a_hang_or_a_delay_cancels_the_attempt() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    let faults = [
        (Fault::Hang, false),
        (Fault::Hang, true),
        (Fault::Delay { ms: 10_000 }, false),
        (Fault::Delay { ms: 10_000 }, true),
    ];
    for (i, (fault, stream)) in faults.into_iter().enumerate() {
        em.fail_next(fault.clone());
        let sent = chat(&http, &em, Vendor::Openai, stream, false)
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        ensure!(sent.is_err_and(|e| e.is_timeout()));
        let r = outcome(&em, i).await?;
        ensure!(r.outcome == Outcome::Cancelled, "{fault:?}: {r:?}");
        let took = r.ended_ms.map(|e| e - r.at_ms);
        ensure!(
            took.is_some_and(|t| (90..600).contains(&t)),
            "{fault:?}: {r:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn resets_and_cut_streams_are_faulted() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    em.fail_next(Fault::Reset);
    ensure!(
        chat(&http, &em, Vendor::Anthropic, false, false)
            .send()
            .await
            .is_err()
    );
    ensure!(outcome(&em, 0).await?.outcome == Outcome::Faulted);

    em.fail_next(Fault::CutMidStream { after_events: 2 });
    let resp = chat(&http, &em, Vendor::Gemini, true, false).send().await?;
    ensure!(resp.bytes().await.is_err());
    ensure!(outcome(&em, 1).await?.outcome == Outcome::Faulted);

    // A stream without its terminator still ended as the emulator meant it to.
    em.fail_next(Fault::NoDone);
    send(chat(&http, &em, Vendor::Openai, true, false)).await?;
    ensure!(outcome(&em, 2).await?.outcome == Outcome::Completed);
    Ok(())
}

#[tokio::test]
async fn arrival_times_show_how_attempts_were_spaced() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    send(chat(&http, &em, Vendor::Openai, false, false)).await?;
    let all = em
        .wait_for(SETTLE, |r| r.len() == 2)
        .await
        .context("two requests")?;
    let gap = all[1].at_ms - all[0].at_ms;
    ensure!((120..400).contains(&gap), "gap {gap} ms");
    Ok(())
}

#[tokio::test]
async fn the_log_over_http_carries_times_and_outcomes() -> Result<()> {
    let em = Emulator::start().await?;
    let http = http()?;
    send(chat(&http, &em, Vendor::Gemini, true, false)).await?;
    outcome(&em, 0).await?;
    let log: serde_json::Value = http
        .get(format!("{}/_emulator/requests", em.url()))
        .send()
        .await?
        .json()
        .await?;
    let r = &log[0];
    ensure!(
        r["vendor"] == "gemini" && r["outcome"] == "completed",
        "{log}"
    );
    ensure!(r["at_ms"].is_u64() && r["ended_ms"].is_u64(), "{log}");
    Ok(())
}

#[tokio::test]
async fn with_recording_off_nothing_is_logged_and_faults_still_work() -> Result<()> {
    let config = EmulatorConfig {
        record: false,
        ..EmulatorConfig::default()
    };
    let em = Emulator::start_on(0, config).await?;
    let http = http()?;
    let (status, _) = send(chat(&http, &em, Vendor::Openai, true, false)).await?;
    ensure!(status == 200);
    em.fail_next(Fault::Reset);
    ensure!(
        chat(&http, &em, Vendor::Openai, false, false)
            .send()
            .await
            .is_err()
    );
    ensure!(em.requests().is_empty());
    Ok(())
}
