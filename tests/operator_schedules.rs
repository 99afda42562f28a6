//! OutboundSchedule on the ground: incremental runs under expanded names, the concurrency
//! policies, history limits and suspend, missed runs while the operator is down, and two
//! replicas across a slot. Each test runs its own operator on its own namespace and bucket.

mod operator_support;
#[path = "upload_support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination, OutboundSchedule, Phase};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A world with the operator running, a bucket, the claim `exports` (its folder) and the
/// destination `acme` (keys in a Secret, through a fault proxy), Ready.
struct Stage {
    world: World,
    gw: aws_sdk_s3::Client,
    bkt: String,
    folder: std::path::PathBuf,
    proxy: proxy::Proxy,
}

async fn stage(name: &str) -> Stage {
    let mut world = World::new(name).await;
    let env = &world.env;
    let (endpoint, key, secret) = (
        env.s3_endpoint.clone(),
        env.s3_access_key.clone(),
        env.s3_secret_key.clone(),
    );
    let gw = s3(&endpoint, &env.s3_region, &key, &secret).await;
    let bkt = format!("{name}-{}", suffix());
    gw.create_bucket().bucket(&bkt).send().await.unwrap();
    let folder = world.volume("exports").await;
    let proxy = proxy::Proxy::start(&endpoint).await;
    world
        .secret(
            "keys",
            &[
                ("AWS_ACCESS_KEY_ID", &key),
                ("AWS_SECRET_ACCESS_KEY", &secret),
            ],
        )
        .await;
    world
        .apply_yaml::<OutboundDestination>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: acme}}\nspec:\n  s3: {{bucket: {bkt}, region: us-east-1, endpoint: \"{}\", forcePathStyle: true}}\n  credentials: {{secret: {{name: keys}}}}\n",
            proxy.url()
        ))
        .await
        .unwrap();
    world.start_operator();
    world.wait_destination("acme", "True", "Validated").await;
    Stage {
        world,
        gw,
        bkt,
        folder,
        proxy,
    }
}

fn schedule_yaml(name: &str, spec: &str, template_extra: &str) -> String {
    format!(
        "apiVersion: outbound.dev/v1alpha1\nkind: OutboundSchedule\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    destinationRef: {{name: acme}}\n    source: {{volume: {{claimName: exports, path: data}}}}\n{template_extra}"
    )
}

/// The schedule's runs, oldest slot first.
async fn runs(world: &World, schedule: &str) -> Vec<OutboundDelivery> {
    let mut runs = world
        .api::<OutboundDelivery>()
        .list(&ListParams::default().labels(&format!("outbound.dev/schedule={schedule}")))
        .await
        .unwrap()
        .items;
    runs.sort_by_key(|r| r.annotations().get("outbound.dev/scheduled-time").cloned());
    runs
}

async fn schedule_status(world: &World, name: &str) -> outbound::api::OutboundScheduleStatus {
    world
        .api::<OutboundSchedule>()
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Keys under `prefix`, sorted.
async fn keys_under(gw: &aws_sdk_s3::Client, bkt: &str, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = list_objects(gw, bkt)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    keys
}

async fn manifest(gw: &aws_sdk_s3::Client, bkt: &str, key: &str) -> serde_json::Value {
    let body = gw
        .get_object()
        .bucket(bkt)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("manifest {key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn phase(run: &OutboundDelivery) -> Option<Phase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn ended(run: &OutboundDelivery) -> bool {
    matches!(phase(run), Some(Phase::Succeeded | Phase::Failed))
}

/// Waits until the schedule has `n` runs that ended, and returns every run.
async fn wait_ended_runs(
    world: &World,
    schedule: &str,
    n: usize,
    within: Duration,
) -> Vec<OutboundDelivery> {
    wait_for(
        &format!("{n} ended runs of {schedule}"),
        within,
        || async {
            let all = runs(world, schedule).await;
            (all.iter().filter(|r| ended(r)).count() >= n).then_some(all)
        },
        || world.diagnose(),
    )
    .await
}

/// Every 20 s, incremental: the first run delivers both files; a third file added, the next run
/// with anything to deliver delivers only it; a run with nothing new delivers nothing and writes
/// an empty manifest. Keys and names are the run's, expanded.
#[tokio::test]
async fn incremental_runs_deliver_only_what_is_new_under_the_runs_names() {
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy: _proxy,
    } = stage("incremental").await;
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::write(folder.join("data/a.sync"), "a1\na2\n").unwrap();
    std::fs::write(folder.join("data/b.sync"), "b1\n").unwrap();
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "daily",
            "  schedule: \"*/20 * * * * *\"\n  mode: incremental\n  settleSeconds: 1\n",
            "    keyPrefix: \"{schedule}/{run}/\"\n    nameTemplate: \"{stem}_{mode}_{timestamp}-{n}{ext}\"\n    manifestName: \"{schedule}_{run}.info\"\n",
        ))
        .await
        .unwrap();
    let first = wait_ended_runs(&world, "daily", 1, Duration::from_secs(60)).await;
    let run1 = &first[0];
    assert_eq!(phase(run1), Some(Phase::Succeeded), "{:?}", run1.status);
    let slot1: jiff::Timestamp = run1.annotations()["outbound.dev/scheduled-time"]
        .parse()
        .unwrap();
    assert_eq!(slot1.as_second() % 20, 0, "a slot of the cron");
    let ts = slot1.as_second();
    assert_eq!(
        keys_under(&gw, &bkt, "daily/1/").await,
        vec![
            format!("daily/1/a_iter_{ts}-001.sync"),
            format!("daily/1/b_iter_{ts}-001.sync"),
            "daily/1/daily_1.info".to_string(),
        ]
    );
    assert_eq!(
        manifest(&gw, &bkt, "daily/1/daily_1.info").await["Totals"]["NumFiles"],
        2
    );

    // A third file: delivered by the next run that has anything to deliver, alone.
    std::fs::write(folder.join("data/c.sync"), "c1\nc2\nc3\n").unwrap();
    let all = wait_for(
        "a run that delivered c.sync, then one with nothing new",
        Duration::from_secs(120),
        || async {
            let all = runs(&world, "daily").await;
            let ended: Vec<&OutboundDelivery> = all.iter().filter(|r| ended(r)).collect();
            let with_c = ended.iter().position(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.progress.as_ref())
                    .is_some_and(|p| p.objects_done > 0)
                    && r.name_any() != run1.name_any()
            })?;
            (ended.len() > with_c + 1).then(|| all.clone())
        },
        || world.diagnose(),
    )
    .await;
    let ended: Vec<&OutboundDelivery> = all.iter().filter(|r| ended(r)).collect();
    for run in &ended {
        assert_eq!(
            phase(run),
            Some(Phase::Succeeded),
            "{}: {:?}",
            run.name_any(),
            run.status.as_ref().map(|s| &s.conditions)
        );
    }
    let mut saw_c = false;
    for run in &ended[1..] {
        let n: u64 = run.annotations()["outbound.dev/run"].parse().unwrap();
        let objects = run
            .status
            .as_ref()
            .unwrap()
            .progress
            .as_ref()
            .map_or(0, |p| p.objects_done);
        let keys = keys_under(&gw, &bkt, &format!("daily/{n}/")).await;
        let info = manifest(&gw, &bkt, &format!("daily/{n}/daily_{n}.info")).await;
        if objects > 0 {
            assert!(!saw_c, "c.sync delivered twice");
            saw_c = true;
            let slot: jiff::Timestamp = run.annotations()["outbound.dev/scheduled-time"]
                .parse()
                .unwrap();
            assert_eq!(
                keys,
                vec![
                    format!("daily/{n}/c_iter_{}-001.sync", slot.as_second()),
                    format!("daily/{n}/daily_{n}.info"),
                ],
                "only the new file, under run {n}'s names"
            );
            assert_eq!(info["Totals"]["NumFiles"], 1);
            assert_eq!(info["Totals"]["NumRecords"], 3);
        } else {
            // Nothing new: no object, and an empty manifest says so.
            assert_eq!(keys, vec![format!("daily/{n}/daily_{n}.info")]);
            assert_eq!(info["Totals"]["NumFiles"], 0, "{info}");
        }
    }
    assert!(saw_c);
    let status = schedule_status(&world, "daily").await;
    assert!(status.last_successful_time.is_some());
    assert!(status.next_schedule_time.is_some());

    // Per destination and per schedule, in the operator's metrics.
    let text = world.operator_metrics().await;
    let ns = world.ns.as_str();
    let dest = [("namespace", ns), ("destination", "acme")];
    let sched = [("namespace", ns), ("schedule", "daily")];
    let last = metric(
        &text,
        "outbound_destination_last_success_timestamp_seconds",
        &dest,
    )
    .unwrap_or_else(|| panic!("no last success for acme:\n{text}"));
    assert!(last >= slot1.as_second() as f64, "{last}");
    assert!(
        metric(&text, "outbound_destination_delivered_objects_total", &dest).unwrap() >= 3.0,
        "a, b and c at least"
    );
    assert!(metric(&text, "outbound_destination_delivered_bytes_total", &dest).unwrap() > 0.0);
    assert!(
        metric(
            &text,
            "outbound_schedule_last_success_timestamp_seconds",
            &sched
        )
        .unwrap()
            >= last - 60.0
    );
    assert_eq!(
        metric(&text, "outbound_schedule_missed_runs_total", &sched),
        Some(0.0)
    );
    world.cleanup().await;
}

/// Forbid: a run still uploading (throttled) keeps the next slot from starting one; Replace:
/// the running one is deleted, its uploads aborted, and the new one runs.
#[tokio::test]
async fn forbid_skips_a_slot_while_a_run_uploads_and_replace_replaces_it() {
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy,
    } = stage("concurrency").await;
    std::fs::create_dir_all(folder.join("data")).unwrap();
    // 80 MiB at 256 KiB/s a connection, 8 connections: a run outlasts several 5-second slots.
    let line = "x".repeat(1023) + "\n";
    std::fs::write(folder.join("data/big.sync"), line.repeat(80 << 10)).unwrap();
    proxy.faults.rate.store(256 << 10, Ordering::SeqCst);
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "slow",
            "  schedule: \"*/5 * * * * *\"\n  concurrencyPolicy: Forbid\n",
            "    keyPrefix: \"{run}/\"\n",
        ))
        .await
        .unwrap();
    let skipped = wait_for(
        "a slot skipped while the first run uploads",
        Duration::from_secs(60),
        || async {
            let status = schedule_status(&world, "slow").await;
            (status.missed_runs >= 2).then_some(status)
        },
        || world.diagnose(),
    )
    .await;
    let all = runs(&world, "slow").await;
    assert_eq!(
        all.len(),
        1,
        "one run at a time: {:?}",
        all.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(skipped.active, vec![all[0].name_any()]);
    assert!(!ended(&all[0]));
    let first = all[0].name_any();

    // Replace: the next slot deletes the running run (its uploads aborted) and starts its own.
    world
        .api::<OutboundSchedule>()
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"concurrencyPolicy": "Replace"}})),
        )
        .await
        .unwrap();
    wait_for(
        "the first run replaced and gone",
        Duration::from_secs(60),
        || async {
            let all = runs(&world, "slow").await;
            (!all.iter().any(|r| r.name_any() == first) && !all.is_empty()).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    // Nothing half-written of the replaced run: no object under its prefix, no open upload of it.
    assert!(keys_under(&gw, &bkt, "1/").await.is_empty());
    let open: Vec<String> = open_uploads(&gw, &bkt)
        .await
        .into_iter()
        .filter(|k| k.starts_with("1/"))
        .collect();
    assert!(open.is_empty(), "left open: {open:?}");
    world
        .api::<OutboundSchedule>()
        .delete("slow", &Default::default())
        .await
        .unwrap();
    world.cleanup().await;
}

/// History limits prune the oldest runs (their objects stay); suspending stops new runs, and a
/// suspended schedule says so.
#[tokio::test]
async fn history_limits_prune_runs_and_suspend_stops_them() {
    let Stage {
        world,
        gw,
        bkt,
        folder,
        proxy: _proxy,
    } = stage("history").await;
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::write(folder.join("data/a.sync"), "a\n").unwrap();
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "often",
            "  schedule: \"*/3 * * * * *\"\n  successfulDeliveriesHistoryLimit: 2\n",
            "    keyPrefix: \"{run}/\"\n    manifest: false\n",
        ))
        .await
        .unwrap();
    wait_for(
        "four runs delivered, two kept",
        Duration::from_secs(90),
        || async {
            let status = schedule_status(&world, "often").await;
            let kept = runs(&world, "often").await;
            (status.runs >= 4
                && kept.iter().filter(|r| ended(r)).count() <= 2
                && !keys_under(&gw, &bkt, "4/").await.is_empty())
            .then_some(())
        },
        || world.diagnose(),
    )
    .await;
    // The pruned runs' objects stay in the bucket.
    for n in 1..=4 {
        assert_eq!(
            keys_under(&gw, &bkt, &format!("{n}/")).await,
            vec![format!("{n}/a.sync")]
        );
    }
    world
        .api::<OutboundSchedule>()
        .patch(
            "often",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let suspended = wait_for(
        "the schedule suspended",
        Duration::from_secs(30),
        || async {
            let s = schedule_status(&world, "often").await;
            (s.conditions.first().map(|c| c.reason.as_str()) == Some("Suspended")).then_some(s)
        },
        || world.diagnose(),
    )
    .await;
    // Three slots later, no new run.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = schedule_status(&world, "often").await;
    assert_eq!(later.runs, suspended.runs, "no run while suspended");
    world.cleanup().await;
}

/// The operator stopped across three slots and started again: one run starts, and `missedRuns`
/// counts the others; two replicas and a restart at a slot boundary: each slot ran once.
#[tokio::test]
async fn missed_slots_start_once_and_each_slot_runs_once_across_replicas() {
    let Stage {
        mut world,
        gw: _gw,
        bkt: _bkt,
        folder,
        proxy: _proxy,
    } = stage("missed").await;
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::write(folder.join("data/a.sync"), "a\n").unwrap();
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "tick",
            "  schedule: \"*/5 * * * * *\"\n  startingDeadlineSeconds: 60\n",
            "    keyPrefix: \"{run}/\"\n    manifest: false\n",
        ))
        .await
        .unwrap();
    wait_ended_runs(&world, "tick", 1, Duration::from_secs(60)).await;
    world.kill_operator();
    let stopped = schedule_status(&world, "tick").await;
    // Three slots (and a little) go by with no operator.
    tokio::time::sleep(Duration::from_secs(16)).await;
    world.start_operator();
    let after = wait_for(
        "one run for the missed slots",
        Duration::from_secs(30),
        || async {
            let s = schedule_status(&world, "tick").await;
            (s.runs > stopped.runs).then_some(s)
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(
        after.runs,
        stopped.runs + 1,
        "one run, not one per missed slot"
    );
    assert!(
        after.missed_runs >= stopped.missed_runs + 2,
        "the other slots counted: {} then {}",
        stopped.missed_runs,
        after.missed_runs
    );

    // A second replica waits on the lease; the first is killed right at a slot boundary.
    let log = world.dir.path().join("replica.log");
    let mut second = world.spawn_operator("replica-2", &log);
    let now = jiff::Timestamp::now();
    let to_boundary = 5_000 - (now.as_millisecond().rem_euclid(5_000)) as u64;
    tokio::time::sleep(Duration::from_millis(to_boundary)).await;
    world.kill_operator();
    world.start_operator();
    // Slots go by under whichever replica leads; then every slot has at most one run.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let all = runs(&world, "tick").await;
    let mut slots: Vec<String> = all
        .iter()
        .map(|r| r.annotations()["outbound.dev/scheduled-time"].clone())
        .collect();
    let before = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), before, "a slot ran twice: {slots:?}");
    let names: Vec<String> = all.iter().map(|r| r.name_any()).collect();
    for (run, slot) in names.iter().zip(&slots) {
        let t: jiff::Timestamp = slot.parse().unwrap();
        assert_eq!(run, &format!("tick-{}", t.as_second()));
    }
    let status = schedule_status(&world, "tick").await;
    assert!(status.runs > after.runs, "runs went on across the restart");
    let _ = second.kill();
    let _ = second.wait();
    world.cleanup().await;
}

/// What the API server refuses: an unknown placeholder, a bad cron expression, a bad time zone.
#[tokio::test]
async fn bad_schedules_and_placeholders_are_refused_by_the_api_server() {
    let world = World::new("badsched").await;
    for (what, spec, extra, words) in [
        (
            "placeholder",
            "  schedule: \"@daily\"\n",
            "    keyPrefix: \"{day}/\"\n",
            "unknown placeholder",
        ),
        (
            "piece placeholder in a prefix",
            "  schedule: \"@daily\"\n",
            "    keyPrefix: \"{stem}/\"\n",
            "unknown placeholder",
        ),
        (
            "cron",
            "  schedule: \"61 * * * *\"\n",
            "",
            "not a cron expression",
        ),
        (
            "cron fields",
            "  schedule: \"* * *\"\n",
            "",
            "not a cron expression",
        ),
        (
            "time zone",
            "  schedule: \"0 6 * * *\"\n  timeZone: Mars/Olympus\n",
            "",
            "timeZone",
        ),
    ] {
        let result = world
            .apply_yaml::<OutboundSchedule>(&schedule_yaml("bad", spec, extra))
            .await;
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                assert!(status.message.contains(words), "{what}: {}", status.message);
            }
            other => panic!("{what} was not refused: {other:?}"),
        }
    }
    // A delivery's own nameTemplate and manifestName are checked too.
    let bad = "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: bad}\nspec:\n  destinationRef: {name: acme}\n  source: {volume: {claimName: exports}}\n  nameTemplate: \"{stem}-{part}{ext}\"\n";
    match world.apply_yaml::<OutboundDelivery>(bad).await {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("unknown placeholder"),
                "{}",
                status.message
            )
        }
        other => panic!("not refused: {other:?}"),
    }
    // And a good one is admitted.
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "good",
            "  schedule: \"0 6 * * MON-FRI\"\n  timeZone: Europe/Berlin\n  suspend: true\n",
            "    keyPrefix: \"{date}/\"\n    nameTemplate: \"{stem}_{mode}_{timestamp}-{n}{ext}\"\n    manifestName: \"{schedule}_{date}.info\"\n",
        ))
        .await
        .expect("a good schedule");
    world.cleanup().await;
}

/// One request a receiver saw: its headers (lowercased names), its body, and the code answered.
type Seen = (Vec<(String, String)>, Vec<u8>, u16);

/// A receiver of webhooks on 127.0.0.1 that answers 500 to its first `failures` requests, then
/// 200; it keeps every request's headers (lowercased names) and body, and what it answered.
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

async fn receiver(failures: usize) -> Receiver {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/receipts", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body_start) = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                }
            };
            let headers: Vec<(String, String)> = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = buf[body_start.min(buf.len())..].to_vec();
            while body.len() < length {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let code = {
                let mut seen = kept.lock().unwrap();
                let code = if seen.len() < failures { 500 } else { 200 };
                seen.push((headers, body, code));
                code
            };
            let reason = if code == 200 {
                "OK"
            } else {
                "Internal Server Error"
            };
            let _ = conn
                .write_all(
                    format!(
                        "HTTP/1.1 {code} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    Receiver { url, seen }
}

/// Every run that ends sends one CloudEvent, signed with the Secret's key, to the webhook; a
/// receiver that fails twice is tried again until it answers, and the run's status says so.
#[tokio::test]
async fn each_run_sends_one_signed_receipt_retried_until_the_receiver_answers() {
    use hmac::Mac;
    let Stage {
        world,
        gw: _gw,
        bkt: _bkt,
        folder,
        proxy: _proxy,
    } = stage("receipts").await;
    std::fs::create_dir_all(folder.join("data")).unwrap();
    std::fs::write(folder.join("data/a.sync"), "a\n").unwrap();
    let hook = receiver(2).await;
    let signing_key = format!("key-{}", suffix());
    world.secret("hook", &[("signing", &signing_key)]).await;
    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml(
            "receipted",
            "  schedule: \"*/10 * * * * *\"\n",
            &format!(
                "    keyPrefix: \"{{run}}/\"\n    notify:\n      webhook:\n        url: \"{}\"\n        secretRef: {{name: hook, key: signing}}\n",
                hook.url
            ),
        ))
        .await
        .unwrap();
    let sent = wait_for(
        "two runs ended with their receipts sent",
        Duration::from_secs(120),
        || async {
            let all = runs(&world, "receipted").await;
            let done: Vec<OutboundDelivery> = all
                .into_iter()
                .filter(|r| {
                    r.status
                        .as_ref()
                        .and_then(|s| s.notification.as_ref())
                        .is_some_and(|n| n.sent_time.is_some())
                })
                .collect();
            (done.len() >= 2).then_some(done)
        },
        || world.diagnose(),
    )
    .await;
    // The first run's receipt took three attempts (two refused), the second's one.
    let attempts: Vec<i32> = sent
        .iter()
        .map(|r| {
            r.status
                .as_ref()
                .unwrap()
                .notification
                .as_ref()
                .unwrap()
                .attempts
        })
        .collect();
    assert_eq!(attempts[0], 3, "{attempts:?}");
    assert_eq!(attempts[1], 1, "{attempts:?}");
    let seen = hook.seen.lock().unwrap().clone();
    let accepted: Vec<&Seen> = seen.iter().filter(|(_, _, code)| *code == 200).collect();
    for run in &sent {
        let uid = run.uid().unwrap();
        let events: Vec<serde_json::Value> = accepted
            .iter()
            .map(|(_, body, _)| serde_json::from_slice::<serde_json::Value>(body).unwrap())
            .filter(|e| e["id"] == format!("{uid}-succeeded"))
            .collect();
        assert_eq!(events.len(), 1, "one receipt for {}", run.name_any());
        let event = &events[0];
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "dev.outbound.delivery.succeeded");
        assert_eq!(event["data"]["delivery"], run.name_any());
        assert_eq!(event["data"]["schedule"], "receipted");
        assert_eq!(event["data"]["objects"], 1);
    }
    for (headers, body, _) in &seen {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(header("content-type"), "application/cloudevents+json");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
        mac.update(body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(header("x-outbound-signature"), format!("sha256={expected}"));
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains(&signing_key), "the key itself is never sent");
    }
    world.cleanup().await;
}

/// What Argo CD (the chart's Lua health check, run by gopher-lua) and Flux (kstatus) make of an
/// object: `(lua status, kstatus status)`.
fn judged(kind: &str, object: &impl serde::Serialize) -> (String, String) {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    // Built (or found in the cache) once per test run, not once per object judged.
    let binary = BINARY.get_or_init(|| {
        let built = std::process::Command::new(root.join("tests/ground/scripts/health.sh"))
            .output()
            .expect("tests/ground/scripts/health.sh");
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        String::from_utf8(built.stdout).unwrap().trim().to_string()
    });
    let script = root.join(format!(
        "charts/outbound/files/argocd/outbound.dev_{kind}.lua"
    ));
    let mut child = std::process::Command::new(binary)
        .arg("--lua")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(object).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["lua"]["status"].as_str().unwrap_or_default().to_string(),
        v["kstatus"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits until Prometheus has scraped a series for `selector`.
async fn scraped(prom: &monitoring::Prometheus, selector: &str, since: i64) {
    wait_for(
        &format!("Prometheus to scrape {selector}"),
        Duration::from_secs(30),
        || async {
            let now = jiff::Timestamp::now().as_second();
            let found = prom.query_range(selector, since, now).await.ok()?;
            (!found.is_empty()).then_some(())
        },
        || prom.log(),
    )
    .await;
}

/// The real objects of a run, judged as Argo CD and Flux would: a destination Ready and one
/// refused; a delivery pending, uploading, succeeded, failed and suspended; a schedule running
/// and suspended. A real Prometheus scrapes the operator all along and evaluates the chart's
/// alert rules; at the end every dashboard panel's query, and every metric each alert names,
/// returns series.
#[tokio::test]
async fn gitops_tools_and_prometheus_read_each_state_of_the_real_objects() {
    let Stage {
        world,
        gw: _gw,
        bkt,
        folder,
        proxy,
    } = stage("health").await;
    let began = jiff::Timestamp::now().as_second();
    let prom = monitoring::Prometheus::start(
        &[world.metrics_addr()],
        &monitoring::rules_file(&monitoring::rendered_rules(&[])),
    )
    .await;
    let dest = world
        .api::<OutboundDestination>()
        .get("acme")
        .await
        .unwrap();
    assert_eq!(
        judged("OutboundDestination", &dest),
        ("Healthy".into(), "Current".into())
    );
    world
        .apply_yaml::<OutboundDestination>(&format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: nokeys}}\nspec:\n  s3: {{bucket: {bkt}, region: us-east-1, endpoint: \"{}\", forcePathStyle: true}}\n  credentials: {{secret: {{name: missing}}}}\n",
            proxy.url()
        ))
        .await
        .unwrap();
    let refused = world
        .wait_destination("nokeys", "False", "SecretNotFound")
        .await;
    assert_eq!(
        judged("OutboundDestination", &refused),
        ("Degraded".into(), "Failed".into())
    );

    std::fs::create_dir_all(folder.join("data")).unwrap();
    let line = "x".repeat(1023) + "\n";
    std::fs::write(folder.join("data/big.sync"), line.repeat(40 << 10)).unwrap();
    proxy.faults.rate.store(256 << 10, Ordering::SeqCst);
    let delivery = |name: &str, extra: &str| {
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {{name: {name}}}\nspec:\n  destinationRef: {{name: acme}}\n  source: {{volume: {{claimName: exports, path: data}}}}\n  keyPrefix: {name}/\n{extra}"
        )
    };
    // Pending: its destination does not exist (yet).
    world
        .apply_yaml::<OutboundDelivery>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: waiting}\nspec:\n  destinationRef: {name: later}\n  source: {volume: {claimName: exports, path: data}}\n",
        )
        .await
        .unwrap();
    let pending = world
        .wait_delivery(
            "waiting",
            "Pending",
            Some("DestinationNotFound"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        judged("OutboundDelivery", &pending),
        ("Progressing".into(), "InProgress".into())
    );
    world
        .apply_yaml::<OutboundDelivery>(&delivery("slow", ""))
        .await
        .unwrap();
    let uploading = world
        .wait_delivery("slow", "Uploading", None, Duration::from_secs(60))
        .await;
    assert_eq!(
        judged("OutboundDelivery", &uploading),
        ("Progressing".into(), "InProgress".into())
    );
    scraped(
        &prom,
        "outbound_delivery_last_progress_timestamp_seconds{delivery=\"slow\"}",
        began,
    )
    .await;
    proxy.faults.rate.store(0, Ordering::SeqCst);
    let done = world
        .wait_delivery("slow", "Succeeded", None, Duration::from_secs(120))
        .await;
    assert_eq!(
        judged("OutboundDelivery", &done),
        ("Healthy".into(), "Current".into())
    );
    world
        .apply_yaml::<OutboundDelivery>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: badglob}\nspec:\n  destinationRef: {name: acme}\n  source: {volume: {claimName: exports, path: data, include: [\"[\"]}}\n",
        )
        .await
        .unwrap();
    let failed = world
        .wait_delivery("badglob", "Failed", None, Duration::from_secs(60))
        .await;
    assert_eq!(
        judged("OutboundDelivery", &failed),
        ("Degraded".into(), "Failed".into())
    );
    world
        .apply_yaml::<OutboundDelivery>(&delivery("held", "  suspend: true\n"))
        .await
        .unwrap();
    let held = world
        .wait_delivery(
            "held",
            "Pending",
            Some("Suspended"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(judged("OutboundDelivery", &held).0, "Suspended");

    world
        .apply_yaml::<OutboundSchedule>(&schedule_yaml("hourly", "  schedule: \"@hourly\"\n", ""))
        .await
        .unwrap();
    let scheduled = wait_for(
        "the schedule scheduled",
        Duration::from_secs(30),
        || async {
            let s = world.api::<OutboundSchedule>().get("hourly").await.ok()?;
            s.status.as_ref()?.next_schedule_time.as_ref()?;
            Some(s)
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(
        judged("OutboundSchedule", &scheduled),
        ("Healthy".into(), "Current".into())
    );
    scraped(
        &prom,
        "outbound_schedule_next_success_due_timestamp_seconds{schedule=\"hourly\"}",
        began,
    )
    .await;
    world
        .api::<OutboundSchedule>()
        .patch(
            "hourly",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let suspended = wait_for(
        "the schedule suspended",
        Duration::from_secs(30),
        || async {
            let s = world.api::<OutboundSchedule>().get("hourly").await.ok()?;
            let reason = s.status.as_ref()?.conditions.first()?.reason.clone();
            (reason == "Suspended").then_some(s)
        },
        || world.diagnose(),
    )
    .await;
    assert_eq!(judged("OutboundSchedule", &suspended).0, "Suspended");

    // Every panel's query returns series over the run, and every alert's query runs and each
    // metric it names has series (an alert's own result is empty unless it fires; promtool tests
    // when they fire).
    let end = jiff::Timestamp::now().as_second() + 1;
    scraped(&prom, "outbound_leader", began).await;
    let namespace = regex_quote(&world.ns);
    for (panel, expr) in monitoring::dashboard_queries(&namespace, "15s") {
        let series = prom
            .query_range(&expr, began, end)
            .await
            .unwrap_or_else(|e| panic!("panel {panel:?}: {expr}: {e}"));
        assert!(!series.is_empty(), "panel {panel:?} has no series: {expr}");
    }
    for (alert, expr) in monitoring::alerts() {
        prom.query_range(&expr, began, end)
            .await
            .unwrap_or_else(|e| panic!("{alert}: {expr}: {e}"));
        for selector in monitoring::selectors(&expr) {
            let series = prom.query_range(&selector, began, end).await.unwrap();
            assert!(!series.is_empty(), "{alert}: no series for {selector}");
        }
    }
    let rules = prom.rules().await;
    assert_eq!(rules.len(), monitoring::alerts().len(), "{rules:?}");
    for (name, health, error) in rules {
        assert_eq!(health, "ok", "{name} evaluated with an error: {error}");
    }

    // A destination deleted takes its series with it: an alert on it would never resolve.
    assert!(
        world
            .operator_metrics()
            .await
            .contains("destination=\"nokeys\"")
    );
    world
        .api::<OutboundDestination>()
        .delete("nokeys", &Default::default())
        .await
        .unwrap();
    wait_for(
        "the deleted destination's series gone",
        Duration::from_secs(30),
        || async {
            let text = world.operator_metrics().await;
            (!text.contains("destination=\"nokeys\"")).then_some(())
        },
        || world.diagnose(),
    )
    .await;
    world.cleanup().await;
}

/// A namespace name as a PromQL regex (Grafana quotes a variable's value the same way).
fn regex_quote(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() {
                vec![c]
            } else {
                vec!['\\', '\\', c]
            }
        })
        .collect()
}
