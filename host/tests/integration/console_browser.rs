//! The web console in a real browser: headless Chromium (Debian's `chromium`), driven through
//! ChromeDriver (`chromium-driver`) over the W3C WebDriver protocol, loads the console of a host
//! consuming a live stream from the real broker, and checks that it shows the loaded plugins and
//! figures that change without a reload, and draws the CTR and engagement charts once windows
//! are published. The screenshot is saved as `target/test-artifacts/console.png`.
//!
//! `scripts/test.sh` installs both Debian packages when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::common::expected::{self, Inputs, Late};
use crate::common::{Host, Record, brokers, http, http_delete, read_topics, workspace};
use base64::Engine as _;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process and one browser session in it; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start(profile: &Path, log: &Path) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; scripts/test.sh does it)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The flags a closed network needs: no background connections, no first-run UI.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1600",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser { driver, base, session: String::new() };
        let created = browser.call("/session", Some(capabilities));
        browser.session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        browser
    }

    /// One WebDriver command; its `value`.
    fn call(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| b.to_string());
        let (status, text) = http(&url, &[("Content-Type", "application/json")], body.as_deref().map(str::as_bytes));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
        assert_eq!(status, 200, "{url}: {v}");
        v["value"].clone()
    }

    fn session(&self, path: &str, body: Option<Value>) -> Value {
        self.call(&format!("/session/{}{path}", self.session), body)
    }

    /// Types `text` into the element `css` selects (for a file input: the file's path).
    fn type_into(&self, css: &str, text: &str) {
        let found = self.session("/element", Some(json!({"using": "css selector", "value": css})));
        let id = found["element-6066-11e4-a52e-4f735466cecf"].as_str().unwrap_or_else(|| panic!("no {css}: {found}"));
        self.session(&format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    fn script(&self, script: &str) -> Value {
        self.session("/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// Runs `script` until it returns something truthy, or fails after `timeout`.
    fn await_script(&self, script: &str, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.script(script);
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            assert!(Instant::now() < deadline, "the console never showed {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            http_delete(&format!("{}/session/{}", self.base, self.session));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The consumed-messages figure as the page shows it.
/// Each snapshot of the open windows' live figures holds exactly the input below its positions:
/// its ctr records of each window equal the batch computation over the messages of each
/// partition below the snapshot's offset (the events the host routed as late left out), and the
/// window's published result equals those figures plus what arrived after. Call it once the host
/// has consumed the whole input (`messages`): every window seen live that the end of the input
/// closes must be published by then.
fn check_live_figures(prefix: &str, snapshots: &[Value], messages: usize) {
    let topics =
        ["ad-impressions", "ad-clicks", "ad-events-late", "campaign-ctr-results"].map(|t| format!("{prefix}{t}"));
    // The whole input, and the late copies of it (committed with the host's next checkpoint).
    let (mut looked_at, mut inputs) = (0, 0);
    let input = read_topics(&topics[..3], Duration::from_secs(60), Duration::from_secs(2), |r| {
        inputs += r[looked_at..].iter().filter(|m| m.topic != topics[2]).count();
        looked_at = r.len();
        inputs >= messages
    });
    let of = |t: &str| input.iter().filter(|r| r.topic == t).collect::<Vec<_>>();
    let routed: HashSet<Vec<u8>> = of(&topics[2]).iter().map(|r| r.value.clone()).collect();
    let everything = |t: &str| of(t).iter().map(|r| r.value.clone()).collect::<Vec<_>>();
    let all = Inputs::of_messages(&everything(&topics[0]), &everything(&topics[1]), Late::Routed(&routed));
    assert_eq!(all.messages, messages, "the whole input");
    // The windows seen live that the idle watermark at the end of the input closes.
    let windows: BTreeSet<i64> = snapshots
        .iter()
        .flat_map(|s| s["windows"].as_array().unwrap().iter().map(|w| w["window_start_ms"].as_i64().unwrap()))
        .filter(|&w| w + expected::WINDOW_MS <= all.emitted_by_idle_watermark())
        .collect();
    let published = |r: &[Record]| -> BTreeSet<i64> { r.iter().map(|m| expected::window_of(&m.json())).collect() };
    let results = read_topics(&topics[3..], Duration::from_secs(60), Duration::from_secs(1), |r| {
        windows.is_subset(&published(r))
    });
    // The late copies again, now that those windows are published: a copy of an event late at
    // its task goes out with its window's results, which can be after the input was read above
    // (a fresh clone's run once saw three such copies come last). It waits for at least the
    // copies read before, then 2 s more for the rest.
    let late = read_topics(&topics[2..3], Duration::from_secs(30), Duration::from_secs(2), |r| r.len() >= routed.len());
    let routed: HashSet<Vec<u8>> = late.iter().map(|r| r.value.clone()).collect();
    let all = Inputs::of_messages(&everything(&topics[0]), &everything(&topics[1]), Late::Routed(&routed));
    let ctr_of = |inputs: &Inputs, w: i64| -> BTreeMap<String, (u64, u64)> {
        inputs.ctr(None).by_window.into_iter().filter(|((_, s), _)| *s == w).map(|((c, _), v)| (c, v)).collect()
    };
    let mut compared = 0;
    for snapshot in snapshots {
        let below: HashMap<(String, i64), i64> = snapshot["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p["topic"].as_str().unwrap().to_owned(), p["partition"].as_i64().unwrap()),
                    p["next_offset"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(below.len(), 4, "both partitions of both topics: {snapshot}");
        let before = |t: &str| {
            of(t)
                .iter()
                .filter(|r| r.offset < below[&(r.topic.clone(), i64::from(r.partition))])
                .map(|r| r.value.clone())
                .collect::<Vec<_>>()
        };
        let prefix_inputs = Inputs::of_messages(&before(&topics[0]), &before(&topics[1]), Late::Routed(&routed));
        for w in snapshot["windows"].as_array().unwrap() {
            let start = w["window_start_ms"].as_i64().unwrap();
            if !windows.contains(&start) {
                continue; // still open when the input ended
            }
            let Some(ctr) = w["results"].as_array().unwrap().iter().find(|r| r["plugin"] == "ctr") else { continue };
            assert_eq!(
                ctr["total"].as_u64(),
                Some(ctr["records"].as_array().unwrap().len() as u64),
                "every record shown"
            );
            let partial: BTreeMap<String, (u64, u64)> = ctr["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_owned(),
                        (kv[1]["impressions"].as_u64().unwrap(), kv[1]["clicks"].as_u64().unwrap()),
                    )
                })
                .collect();
            assert_eq!(
                partial,
                ctr_of(&prefix_inputs, start),
                "window {start}: the live figures are the input below {below:?}"
            );
            // The published result (by ctr 0.1.0, or by 0.2.0-next, the same source, swapped in
            // meanwhile): the live figures plus what arrived after them.
            let finals: Vec<Value> =
                results.iter().map(|r| r.json()).filter(|v| expected::window_of(v) == start).collect();
            let (prefix_ctr, all_ctr) = (ctr_of(&prefix_inputs, start), ctr_of(&all, start));
            let mut want = partial.clone();
            for (campaign, (imps, clicks)) in &all_ctr {
                let (before_imps, before_clicks) = prefix_ctr.get(campaign).copied().unwrap_or_default();
                let e = want.entry(campaign.clone()).or_default();
                e.0 += imps - before_imps;
                e.1 += clicks - before_clicks;
            }
            let got: BTreeMap<String, (u64, u64)> = finals
                .iter()
                .map(|v| {
                    (
                        v["campaign_id"].as_str().unwrap().to_owned(),
                        (v["impressions"].as_u64().unwrap(), v["clicks"].as_u64().unwrap()),
                    )
                })
                .collect();
            assert_eq!(got, want, "window {start}: published = live figures + what arrived after");
            compared += 1;
        }
    }
    assert!(compared > 0, "at least one window seen live, then published");
}

fn consumed(browser: &Browser) -> u64 {
    let text = browser.script("return document.querySelector('[data-kpi=\"consumed\"]').textContent");
    text.as_str().unwrap().replace(',', "").parse().unwrap_or_else(|e| panic!("consumed {text}: {e}"))
}

#[test]
fn the_console_shows_live_figures_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = crate::common::fresh_prefix("console");
    // The browser first: it needs neither the host nor the topics, and on a loaded machine its
    // start can take seconds that would otherwise come out of the live stream below.
    let browser = Browser::start(&dir.path().join("profile"), &dir.path().join("chromedriver.log"));
    // 100k messages at 4000/s: 25 s of live stream over 10 minutes of event time.
    let mut generator = Command::new(crate::common::adgen())
        .args(["--brokers", &brokers(), "--partitions", "2", "--events", "100000", "--seed", "5", "--rate", "4000"])
        .args(["--impressions-topic", &format!("{prefix}ad-impressions")])
        .args(["--clicks-topic", &format!("{prefix}ad-clicks")])
        .args(["--late-fraction", "0.002", "--malformed-fraction", "0.002", "--quiet"])
        .stdout(Stdio::null())
        .spawn()
        .expect("adgen");
    crate::common::await_topics(&prefix); // adgen creates the topics
    let host = Host::start(&prefix, &format!("{prefix}g"), &["ctr", "engagement"], dir.path(), &[]);
    let url = host.http_url();
    browser.session("/url", Some(json!({"url": format!("{url}/")})));
    assert_eq!(browser.script("return document.title"), "adstream console");

    // The loaded plugins, with their versions.
    let plugins = browser.await_script(
        "const rows = [...document.querySelectorAll('#plugins tr[data-plugin]')];
         return rows.length >= 2 ? rows.map(r => [...r.cells].map(c => c.textContent.trim())) : null",
        Duration::from_secs(30),
        "the plugins",
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(plugins).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["ctr", "engagement"], "{rows:?}");
    assert!(rows.iter().all(|r| r[1] == "0.1.0" && r[3] == "running"), "{rows:?}");

    // Figures that change without a reload.
    browser.await_script(
        "return document.getElementById('phase').textContent === 'running'",
        Duration::from_secs(30),
        "running",
    );
    // The figure moves while the stream runs (polled: on a loaded machine adgen itself can
    // pause for seconds, as a fresh clone's run once saw: 2.5 s without a new message).
    let first = consumed(&browser);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut second = first;
    while second == first && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        second = consumed(&browser);
    }
    assert!(
        second > first,
        "the consumed figure did not move in 10 s: {first} then {second}; host log:\n{}",
        host.log()
    );
    let partitions = browser.script("return document.querySelectorAll('#partitions tr').length - 1");
    assert_eq!(partitions, 4, "2 + 2 input partitions");
    // A group of one: both tasks and the merge stage on this host.
    let tasks = browser.script(
        "return ['tasks here', 'merge stage'].map(k => document.querySelector(`[data-kpi=\"${k}\"]`).textContent)",
    );
    assert_eq!(tasks, json!(["2", "here"]), "the scale-out figures");

    // The charts, once windows are published: bars per campaign, a line per device.
    browser.await_script(
        "return document.querySelectorAll('#ctr-chart rect').length >= 10",
        Duration::from_secs(60),
        "the CTR chart",
    );
    browser.await_script(
        "return document.querySelectorAll('#eng-chart path').length >= 3",
        Duration::from_secs(60),
        "the engagement chart (two windows at least)",
    );
    browser.await_script(
        "return document.querySelectorAll('#throughput path').length >= 1",
        Duration::from_secs(10),
        "the throughput chart",
    );
    let ctr_title = browser.script("return document.getElementById('ctr-title').textContent");
    assert!(ctr_title.as_str().unwrap().contains("ctr 0.1.0"), "{ctr_title}");

    // The open windows' live figures, marked partial, changing while the stream runs; and the
    // snapshots of `/api/windows/open` behind them, checked against the input once it is in.
    let mut shown: Vec<(i64, u64)> = Vec::new();
    let mut snapshots: Vec<Value> = Vec::new();
    let grew = |shown: &[(i64, u64)]| shown.iter().any(|&(w, n)| shown.iter().any(|&(w2, n2)| w2 == w && n2 > n));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(grew(&shown) && snapshots.len() >= 3) {
        assert!(Instant::now() < deadline, "no open window's figures changed in the console: {shown:?}");
        let open = browser.script(
            "const w = document.querySelector('[data-open-window]');
             return w && w.textContent.includes('PARTIAL') ? [w.dataset.openWindow, w.querySelector('[data-open-events]').textContent] : null",
        );
        if let Some([w, n]) = open.as_array().map(|a| [a[0].as_str().unwrap(), a[1].as_str().unwrap()]) {
            shown.push((w.parse().unwrap(), n.replace(',', "").parse().unwrap()));
        }
        let (status, body) = http(&format!("{url}/api/windows/open"), &[], None);
        assert_eq!(status, 200, "{body}");
        let threads: Value = serde_json::from_str(&body).unwrap();
        let snapshot = &threads[0];
        assert_eq!(snapshot["partial"], true, "{snapshot}; host log:\n{}", host.log());
        if snapshot["windows"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| !w["results"].as_array().unwrap().is_empty()))
            && snapshots.last() != Some(snapshot)
        {
            snapshots.push(snapshot.clone());
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // Swapping through the console's form: a new version of ctr, then another plugin's .wasm
    // offered as ctr (rejected).
    let upload = |wasm: &Path| {
        browser.type_into("#swap-file", wasm.to_str().unwrap());
        browser.script(
            "document.getElementById('swap-result').textContent = ''; document.getElementById('swap-button').click()",
        );
        let shown = browser.await_script(
            "const t = document.getElementById('swap-result').textContent;
             return t.startsWith('Swapped') || t.startsWith('Rejected') ? t : null",
            Duration::from_secs(60),
            "the swap's outcome",
        );
        shown.as_str().unwrap().to_owned()
    };
    let next = workspace().join("target/test-plugins/ctr_next.wasm");
    let swapped = upload(&next);
    assert!(swapped.starts_with("Swapped ctr 0.1.0 → 0.2.0-next"), "{swapped}");
    browser.await_script(
        "return [...document.querySelectorAll('#plugins tr[data-plugin=\"ctr\"] td')].some(td => td.textContent === '0.2.0-next')",
        Duration::from_secs(10),
        "the new version in the plugins table",
    );
    let rejected = upload(&crate::common::plugin("engagement"));
    assert!(rejected.starts_with("Rejected (HTTP 422)") && rejected.contains("describes itself as"), "{rejected}");
    let swaps = browser.await_script(
        "const rows = document.querySelectorAll('#swaps tr'); return rows.length >= 3 ? rows.length - 1 : null",
        Duration::from_secs(10),
        "both swaps in the swap table",
    );
    assert_eq!(swaps, 2, "one applied, one rejected");

    let png = browser.session("/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    let artifacts: PathBuf = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("console.png"), &png).unwrap();
    eprintln!("screenshot: {}", artifacts.join("console.png").display());

    drop(browser);
    // The whole stream, so that the windows seen live are published and their late events in.
    assert!(generator.wait().unwrap().success(), "adgen failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumed = || crate::common::get_json(&format!("{url}/api/status"))["stats"]["consumed"].as_u64().unwrap();
    while consumed() < 100_000 {
        assert!(Instant::now() < deadline, "the host did not consume the whole stream: {}", consumed());
        std::thread::sleep(Duration::from_millis(200));
    }
    check_live_figures(&prefix, &snapshots, 100_000);
    let stats = host.stop();
    crate::common::assert_accounted(&stats);
}
