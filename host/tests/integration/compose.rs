//! Checks the container setup (`docker-compose.yml`, `Dockerfile`, `.dockerignore`) against the code,
//! without Docker: every check is something that breaks when one of those files drifts from the
//! workspace, the binaries' command lines, SPEC.md's topics or `scripts/build-plugins.sh`.
//!
//! - The compose file (parsed with yaml-rust2): the services, their `depends_on`, `build` contexts
//!   and targets, volumes; Kafka in KRaft mode with consistent listeners, and every client pointed at
//!   its internal listener; the topics service creating every SPEC topic; the host's plugins being
//!   files that `scripts/build-plugins.sh` produces, mounted from `./target/plugins`.
//! - The commands: each service's entrypoint (from the compose file or the Dockerfile stage it builds)
//!   and arguments are run against the real `adstream` and `adgen` binaries: every `--flag` and
//!   `ADSTREAM_*`/`ADGEN_*` variable must be in the subcommand's help, the argument list must parse,
//!   the host's time and plugin settings are loaded by `adstream replay` (same settings as `run`),
//!   and `adgen` is started with the generator's exact arguments (writing to files instead of Kafka).
//!   `adgen` is taken from the same target directory as `adstream`; without it that part is skipped.
//! - Prometheus and Grafana (`deploy/`): the configuration and provisioning files parse, are mounted
//!   where the services read them, point at each other and at the host's console port, and every
//!   metric the dashboard queries is one the host exports.
//! - The Dockerfile: its COPY sources exist and are not excluded by `.dockerignore`, it builds the
//!   workspace packages whose binaries the images run, builder and runtime are the same Debian
//!   release, and (on Debian) the runtime stage installs every shared library the binaries link.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The topics of SPEC.md ("Input topics", "Results", "Nothing is lost").
const SPEC_TOPICS: &[&str] = &[
    "ad-impressions",
    "ad-clicks",
    "campaign-ctr-results",
    "device-engagement-results",
    "ad-events-late",
    "ad-events-dlq",
];

/// Services the compose file must have.
const SERVICES: &[&str] = &["kafka", "topics", "generator", "host", "prometheus", "grafana"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is inside the workspace").to_path_buf()
}

fn read(rel: &str) -> String {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

struct Compose {
    root: Value,
}

impl Compose {
    fn load() -> Compose {
        let text = read("docker-compose.yml");
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
        assert_eq!(docs.len(), 1, "docker-compose.yml is one YAML document");
        let root = to_json(&docs[0]);
        assert!(root.is_object(), "docker-compose.yml must be a mapping");
        Compose { root }
    }

    fn services(&self) -> &serde_json::Map<String, Value> {
        self.root.get("services").and_then(Value::as_object).expect("docker-compose.yml has a `services` mapping")
    }

    fn service_names(&self) -> Vec<String> {
        self.services().keys().cloned().collect()
    }

    fn service(&self, name: &str) -> &Value {
        self.services().get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
    }

    /// The `volumes:` declared at the top level.
    fn named_volumes(&self) -> BTreeSet<String> {
        self.root.get("volumes").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

/// A YAML node as JSON (mapping keys become strings; aliases are resolved by the loader).
fn to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(r.clone()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        other => panic!("unsupported YAML node {other:?}"),
    }
}

/// A scalar as a string, as Compose reads environment values (`1`, `true`, `"x"`).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// A service's `environment`, in map or list form.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match svc.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let s = item.as_str().expect("environment list items are strings");
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Some(other) => panic!("environment must be a mapping or a list, found {other:?}"),
    }
}

/// `command` or `entrypoint`: a list of strings, or a string split on whitespace.
fn argv(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(scalar).collect(),
        Value::String(s) => {
            assert!(!s.contains(['"', '\'']), "write `{s}` as a list: quoting is not handled here");
            s.split_whitespace().map(str::to_owned).collect()
        }
        other => panic!("expected a list of strings, found {other:?}"),
    }
}

/// A service's `depends_on` as (service, condition).
fn depends_on(svc: &Value) -> Vec<(String, String)> {
    match svc.get("depends_on") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(|i| (scalar(i), "service_started".to_owned())).collect(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let cond = v.get("condition").map(scalar).unwrap_or_else(|| "service_started".to_owned());
                (k.clone(), cond)
            })
            .collect(),
        Some(other) => panic!("depends_on must be a list or a mapping, found {other:?}"),
    }
}

/// A volume of a service, short or long syntax.
#[derive(Debug)]
struct Mount {
    kind: String,
    source: String,
    target: String,
    read_only: bool,
}

fn mounts(svc: &Value) -> Vec<Mount> {
    let Some(list) = svc.get("volumes").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|v| match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                assert!(parts.len() >= 2, "volume `{s}` needs SOURCE:TARGET");
                let source = parts[0].to_owned();
                let kind = if source.starts_with(['.', '/', '~']) { "bind" } else { "volume" };
                let read_only = parts.get(2).is_some_and(|o| o.split(',').any(|o| o == "ro"));
                Mount { kind: kind.to_owned(), source, target: parts[1].to_owned(), read_only }
            }
            Value::Object(_) => Mount {
                kind: v.get("type").map(scalar).expect("a long-syntax volume has a type"),
                source: v.get("source").map(scalar).unwrap_or_default(),
                target: v.get("target").map(scalar).expect("a long-syntax volume has a target"),
                read_only: v.get("read_only").and_then(Value::as_bool).unwrap_or(false),
            },
            other => panic!("unexpected volume {other:?}"),
        })
        .collect()
}

/// A Compose/Go duration such as `90s` or `1m30s`.
fn go_duration(s: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    assert!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().unwrap_or_else(|_| panic!("bad duration `{s}`"));
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            "ns" => 1e-9,
            unit => panic!("bad unit `{unit}` in duration `{s}`"),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug, Default)]
struct Stage {
    name: Option<String>,
    base: String,
    instructions: Vec<Instruction>,
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    // Join continuation lines; comment lines (also inside a continuation) are dropped, as Docker does.
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    assert!(current.trim().is_empty(), "the Dockerfile ends inside a line continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("cannot read `FROM {args}`"),
            };
            stages.push(Stage { name, base: words[0].to_owned(), instructions: Vec::new() });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("`{keyword}` before the first FROM"))
                .instructions
                .push(Instruction { keyword, args });
        }
    }
    stages
}

/// Exec form (`["a", "b"]`) or shell form (`/bin/sh -c ...`).
fn exec_form(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form `{args}`: {e}"))
    } else {
        vec!["/bin/sh".into(), "-c".into(), args.into()]
    }
}

struct Dockerfile {
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn load(rel: &str) -> Dockerfile {
        let stages = parse_dockerfile(&read(rel));
        assert!(!stages.is_empty(), "{rel} has no FROM");
        Dockerfile { stages }
    }

    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The stage a build `target` selects; without one, the last stage.
    fn target(&self, target: Option<&str>) -> &Stage {
        match target {
            Some(t) => self.stage(t).unwrap_or_else(|| panic!("the Dockerfile has no stage `{t}`")),
            None => self.stages.last().unwrap(),
        }
    }

    /// The stage's ENTRYPOINT and CMD, following `FROM <stage>` (setting ENTRYPOINT resets an
    /// inherited CMD, as Docker does).
    fn entrypoint_and_cmd(&self, stage: &Stage) -> (Option<Vec<String>>, Option<Vec<String>>) {
        let (mut entrypoint, mut cmd) = match self.stage(&stage.base) {
            Some(parent) => self.entrypoint_and_cmd(parent),
            None => (None, None),
        };
        for i in &stage.instructions {
            match i.keyword.as_str() {
                "ENTRYPOINT" => {
                    entrypoint = Some(exec_form(&i.args));
                    cmd = None;
                }
                "CMD" => cmd = Some(exec_form(&i.args)),
                _ => {}
            }
        }
        (entrypoint, cmd)
    }

    /// The external image a stage finally derives from.
    fn root_image<'a>(&'a self, stage: &'a Stage) -> &'a str {
        match self.stage(&stage.base) {
            Some(parent) => self.root_image(parent),
            None => &stage.base,
        }
    }
}

/// A COPY/ADD: its `--from`, sources and destination.
fn copy_parts(args: &str) -> (Option<String>, Vec<String>, String) {
    let mut from = None;
    let mut words = Vec::new();
    if args.contains('[') {
        let start = args.find('[').unwrap();
        for flag in args[..start].split_whitespace() {
            if let Some(f) = flag.strip_prefix("--from=") {
                from = Some(f.to_owned());
            }
        }
        words = serde_json::from_str(&args[start..]).expect("COPY in exec form");
    } else {
        for w in args.split_whitespace() {
            if let Some(f) = w.strip_prefix("--from=") {
                from = Some(f.to_owned());
            } else if !w.starts_with("--") {
                words.push(w.to_owned());
            }
        }
    }
    let dest = words.pop().expect("COPY has a destination");
    assert!(!words.is_empty(), "COPY {args} has no source");
    (from, words, dest)
}

// ---------------------------------------------------------------------------------------------
// .dockerignore

/// `.dockerignore` patterns: (exception?, segments).
fn dockerignore(context: &Path) -> Vec<(bool, Vec<String>)> {
    let Ok(text) = std::fs::read_to_string(context.join(".dockerignore")) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (exception, pattern) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let pattern = pattern.trim_start_matches("./").trim_matches('/');
            (exception, pattern.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        })
        .collect()
}

/// One path segment against a pattern segment with `*` and `?`.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name) || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn path_matches(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            path_matches(&pattern[1..], path) || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => segment_matches(p.as_bytes(), n.as_bytes()) && path_matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Whether `.dockerignore` leaves `rel` out of the build context (a path is out when it or one of
/// its parent directories matches; the last matching line wins).
fn ignored(patterns: &[(bool, Vec<String>)], rel: &str) -> bool {
    let segments: Vec<&str> = rel.trim_start_matches("./").split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    (1..=segments.len()).any(|n| {
        let prefix = &segments[..n];
        let mut out = false;
        for (exception, pattern) in patterns {
            if path_matches(pattern, prefix) {
                out = !exception;
            }
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The workspace

struct Package {
    name: String,
    dir: String,
    bins: Vec<String>,
    /// The source the build reads: `src`, or the file `[lib] path` names.
    source: String,
}

/// `a/b/../c` → `a/c`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn workspace_packages() -> Vec<Package> {
    let root: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml parses");
    let members = root["workspace"]["members"].as_array().expect("[workspace] members");
    members
        .iter()
        .map(|m| {
            let dir = m.as_str().expect("member paths are strings").to_owned();
            let manifest: toml::Table =
                toml::from_str(&read(&format!("{dir}/Cargo.toml"))).expect("member Cargo.toml parses");
            let name = manifest["package"]["name"].as_str().expect("[package] name").to_owned();
            let mut bins: Vec<String> = manifest
                .get("bin")
                .and_then(|b| b.as_array())
                .map(|bins| bins.iter().filter_map(|b| b.get("name")?.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if bins.is_empty() && workspace().join(&dir).join("src/main.rs").is_file() {
                bins.push(name.clone());
            }
            let lib_path = manifest.get("lib").and_then(|l| l.get("path")).and_then(|p| p.as_str());
            let source = match lib_path {
                Some(path) => normalize(&format!("{dir}/{path}")),
                None => format!("{dir}/src"),
            };
            Package { name, dir, bins, source }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the binaries

/// `adstream`, built by cargo for this test.
fn adstream() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_adstream"))
}

/// A binary of the workspace, from the target directory `adstream` was built in.
fn sibling_binary(name: &str) -> PathBuf {
    adstream().with_file_name(name)
}

/// A command with no ADSTREAM_* or ADGEN_* variables from the caller's environment.
fn clean_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("ADSTREAM_") || k.starts_with("ADGEN_") {
            cmd.env_remove(&key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The help of `bin` for the leading subcommand words of `args` (those before the first flag).
fn help(bin: &Path, subcommands: &[String]) -> String {
    let mut cmd = clean_command(bin);
    cmd.args(subcommands).arg("--help");
    let out = run(cmd);
    assert!(out.status.success(), "{} {} --help failed:\n{}", bin.display(), subcommands.join(" "), text(&out));
    text(&out)
}

/// Whether help text names `flag` (followed by something that cannot continue a flag name).
fn mentions_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before_ok = help[..at].chars().last().is_none_or(|c| c.is_whitespace() || c == ',' || c == '[');
        let after_ok = help[at + flag.len()..].chars().next().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
        before_ok && after_ok
    })
}

/// Checks a service's command line against the real binary: the subcommand and every flag exist,
/// every variable with the binary's prefix is read by it, and the arguments parse.
fn check_command_line(service: &str, bin: &Path, args: &[String], env: &BTreeMap<String, String>, env_prefix: &str) {
    let subcommands: Vec<String> = args.iter().take_while(|a| !a.starts_with('-')).cloned().collect();
    let help = help(bin, &subcommands);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            mentions_flag(&help, flag),
            "service `{service}` passes {flag}, which `{} {}` does not accept:\n{help}",
            bin.display(),
            subcommands.join(" ")
        );
    }
    for name in env.keys().filter(|k| k.starts_with(env_prefix)) {
        assert!(
            // `[env: NAME]` when clap hides the value (a secret).
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "service `{service}` sets {name}, which `{} {}` does not read:\n{help}",
            bin.display(),
            subcommands.join(" ")
        );
    }
    // clap parses (and checks the values of) every argument before it acts on the trailing --help.
    let mut cmd = clean_command(bin);
    cmd.args(args).arg("--help");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "service `{service}`: `{} {}` is rejected:\n{}",
        bin.display(),
        args.join(" "),
        text(&out)
    );
}

/// The binary and arguments a service runs: its entrypoint (from the compose file, else from the
/// Dockerfile stage it builds) followed by its command (else the stage's CMD).
fn service_argv(compose: &Compose, name: &str) -> Vec<String> {
    let svc = compose.service(name);
    let build = svc.get("build").unwrap_or_else(|| panic!("service `{name}` has no build"));
    let context = workspace().join(build.get("context").map(scalar).unwrap_or_else(|| scalar(build)));
    let dockerfile = build.get("dockerfile").map(scalar).unwrap_or_else(|| "Dockerfile".into());
    let file = Dockerfile::load(context.join(&dockerfile).strip_prefix(workspace()).unwrap().to_str().unwrap());
    let stage = file.target(build.get("target").and_then(Value::as_str));
    let (image_entrypoint, image_cmd) = file.entrypoint_and_cmd(stage);
    let entrypoint = svc.get("entrypoint").map(argv).or(image_entrypoint).unwrap_or_default();
    let command = match svc.get("command") {
        Some(c) => argv(c),
        None if svc.get("entrypoint").is_some() => Vec::new(),
        None => image_cmd.unwrap_or_default(),
    };
    assert!(!entrypoint.is_empty() || !command.is_empty(), "service `{name}` runs nothing");
    [entrypoint, command].concat()
}

/// Kills a child process when dropped (a failing assertion must not leave it running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value following `flag` in `args` (`--flag value` or `--flag=value`).
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

/// The listener the other containers use: the advertised listener whose host is the Kafka service.
fn internal_bootstrap(compose: &Compose) -> String {
    let kafka = compose.service("kafka");
    let env = environment(kafka);
    let hostname = kafka.get("hostname").map(scalar).unwrap_or_else(|| "kafka".into());
    let advertised = &env["KAFKA_ADVERTISED_LISTENERS"];
    let found: Vec<String> = advertised
        .split(',')
        .filter_map(|l| l.split_once("://").map(|(_, addr)| addr.trim().to_owned()))
        .filter(|addr| addr.rsplit_once(':').is_some_and(|(host, _)| host == hostname || host == "kafka"))
        .collect();
    assert_eq!(found.len(), 1, "one advertised listener must be kafka:PORT for the containers: {advertised}");
    found.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn compose_has_the_services_and_their_references_resolve() {
    let compose = Compose::load();
    assert!(compose.root.get("version").is_none(), "the Compose spec has no `version:` key");
    let names = compose.service_names();
    for s in SERVICES {
        assert!(names.iter().any(|n| n == s), "docker-compose.yml lacks the `{s}` service (has {names:?})");
    }
    let declared = compose.named_volumes();
    for name in &names {
        let svc = compose.service(name);
        for (dep, condition) in depends_on(svc) {
            assert!(names.contains(&dep), "`{name}` depends on `{dep}`, which is no service");
            let target = compose.service(&dep);
            match condition.as_str() {
                "service_started" => {}
                "service_healthy" => {
                    assert!(
                        target.get("healthcheck").is_some(),
                        "`{name}` waits for `{dep}` to be healthy, which has no healthcheck"
                    )
                }
                "service_completed_successfully" => {
                    let restart = target.get("restart").map(scalar).unwrap_or_else(|| "no".into());
                    assert_eq!(restart, "no", "`{name}` waits for `{dep}` to complete, so `{dep}` must not restart");
                }
                other => panic!("`{name}` depends on `{dep}` with unknown condition `{other}`"),
            }
        }
        if let Some(build) = svc.get("build") {
            let context = build.get("context").map(scalar).unwrap_or_else(|| scalar(build));
            let context_dir = workspace().join(&context);
            assert!(context_dir.is_dir(), "`{name}`: build context {context} does not exist");
            let dockerfile = build.get("dockerfile").map(scalar).unwrap_or_else(|| "Dockerfile".into());
            let path = context_dir.join(&dockerfile);
            assert!(path.is_file(), "`{name}`: {} does not exist", path.display());
            if let Some(target) = build.get("target").and_then(Value::as_str) {
                let rel = path.strip_prefix(workspace()).unwrap().to_str().unwrap().to_owned();
                assert!(Dockerfile::load(&rel).stage(target).is_some(), "`{name}`: {rel} has no stage `{target}`");
            }
        } else {
            assert!(svc.get("image").is_some(), "`{name}` has neither image nor build");
        }
        for m in mounts(svc) {
            if m.kind == "volume" {
                assert!(
                    declared.contains(&m.source),
                    "`{name}` mounts volume `{}`, not declared under `volumes:`",
                    m.source
                );
            }
        }
    }
}

#[test]
fn kafka_is_a_single_kraft_node_that_the_containers_reach() {
    let compose = Compose::load();
    for name in compose.service_names() {
        let svc = compose.service(&name);
        let image = svc.get("image").map(scalar).unwrap_or_default();
        assert!(
            !name.contains("zookeeper") && !image.contains("zookeeper"),
            "`{name}` looks like ZooKeeper; Kafka runs in KRaft mode"
        );
    }
    let kafka = compose.service("kafka");
    let image = kafka.get("image").map(scalar).unwrap_or_default();
    assert!(image.starts_with("apache/kafka:"), "kafka should be the official apache/kafka image, is `{image}`");
    let env = environment(kafka);
    let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("kafka lacks {k}"));
    assert!(!env.contains_key("KAFKA_ZOOKEEPER_CONNECT"), "KRaft mode has no ZooKeeper");
    let roles: BTreeSet<&str> =
        env.get("KAFKA_PROCESS_ROLES").map(|r| r.split(',').map(str::trim).collect()).unwrap_or_default();
    assert_eq!(roles, BTreeSet::from(["broker", "controller"]), "KAFKA_PROCESS_ROLES: one combined KRaft node");
    assert!(!get("CLUSTER_ID").is_empty(), "KRaft storage is formatted with CLUSTER_ID");
    for (key, want) in [
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    ] {
        assert_eq!(get(key), want, "{key} on a single node");
    }

    // Listeners: name -> port.
    let listeners: BTreeMap<String, String> = get("KAFKA_LISTENERS")
        .split(',')
        .map(|l| {
            let (name, addr) = l.trim().split_once("://").expect("NAME://HOST:PORT");
            (name.to_owned(), addr.rsplit_once(':').expect("HOST:PORT").1.to_owned())
        })
        .collect();
    let protocols: BTreeSet<String> = get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
        .split(',')
        .map(|p| p.split_once(':').expect("NAME:PROTOCOL").0.trim().to_owned())
        .collect();
    for name in listeners.keys() {
        assert!(protocols.contains(name), "listener {name} has no security protocol");
    }
    let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
    let controller_port = listeners.get(&controller).unwrap_or_else(|| panic!("no {controller} listener"));
    let hostname = kafka.get("hostname").map(scalar).unwrap_or_else(|| "kafka".into());
    assert_eq!(
        get("KAFKA_CONTROLLER_QUORUM_VOTERS"),
        format!("{}@{hostname}:{controller_port}", get("KAFKA_NODE_ID")),
        "the quorum is this node, on its controller listener"
    );
    assert!(listeners.contains_key(&get("KAFKA_INTER_BROKER_LISTENER_NAME")), "inter-broker listener exists");
    let published: Vec<String> =
        kafka.get("ports").and_then(Value::as_array).map(|p| p.iter().map(scalar).collect()).unwrap_or_default();
    for adv in get("KAFKA_ADVERTISED_LISTENERS").split(',') {
        let (name, addr) = adv.trim().split_once("://").expect("NAME://HOST:PORT");
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        assert_eq!(listeners.get(name), Some(&port.to_owned()), "advertised {adv} is not a listener's port");
        if host == "localhost" || host == "127.0.0.1" {
            assert!(
                published.iter().any(|p| p == &format!("{port}:{port}")),
                "{adv} is advertised to this machine, so port {port} must be published as {port}:{port}"
            );
        }
    }

    // Every client uses the internal listener.
    let internal = internal_bootstrap(&compose);
    let health = compose.service("kafka").get("healthcheck").map(|h| argv(&h["test"]).join(" ")).unwrap_or_default();
    assert!(
        health.contains("/opt/kafka/bin/kafka-broker-api-versions.sh") && health.contains(&internal),
        "kafka's healthcheck asks the broker on {internal} with kafka-broker-api-versions.sh: `{health}`"
    );
    assert_eq!(environment(compose.service("topics")).get("BOOTSTRAP"), Some(&internal), "topics' BOOTSTRAP");
    assert_eq!(
        environment(compose.service("host")).get("ADSTREAM_BROKERS"),
        Some(&internal),
        "host's ADSTREAM_BROKERS"
    );
    for name in ["generator", "tail"] {
        if compose.services().contains_key(name) {
            let args = service_argv(&compose, name);
            assert_eq!(flag_value(&args, "--brokers"), Some(internal.as_str()), "`{name}` --brokers");
        }
    }
}

/// The topics the `topics` service creates: name -> partitions.
fn created_topics(compose: &Compose) -> BTreeMap<String, u32> {
    let topics = compose.service("topics");
    let script = argv(topics.get("command").expect("topics has a command")).join(" ");
    for needle in ["kafka-topics.sh", "--create", "--if-not-exists", "TOPICS", "BOOTSTRAP"] {
        assert!(script.contains(needle), "the topics service's script should use {needle}: {script}");
    }
    let env = environment(topics);
    env.get("TOPICS")
        .expect("topics has TOPICS (name:partitions ...)")
        .split_whitespace()
        .map(|spec| {
            let (name, partitions) = spec.split_once(':').unwrap_or_else(|| panic!("`{spec}` is not name:partitions"));
            let partitions: u32 = partitions.parse().unwrap_or_else(|_| panic!("`{spec}`: bad partition count"));
            assert!(partitions >= 1, "`{spec}`: at least one partition");
            (name.to_owned(), partitions)
        })
        .collect()
}

#[test]
fn the_topics_service_creates_every_spec_topic() {
    let compose = Compose::load();
    let topics = compose.service("topics");
    assert_eq!(topics.get("image"), compose.service("kafka").get("image"), "topics runs the Kafka image's tools");
    assert!(
        depends_on(topics).contains(&("kafka".to_owned(), "service_healthy".to_owned())),
        "topics waits for kafka to be healthy"
    );
    let created = created_topics(&compose);
    for t in SPEC_TOPICS {
        assert!(created.contains_key(*t), "the topics service does not create `{t}` (SPEC.md); it creates {created:?}");
    }
    // Keep SPEC_TOPICS honest where the contract is at hand (shared/ beside the repository).
    if let Ok(spec) = std::fs::read_to_string(workspace().join("../shared/SPEC.md")) {
        for t in SPEC_TOPICS {
            assert!(spec.contains(&format!("`{t}`")), "SPEC.md no longer names `{t}`: update SPEC_TOPICS");
        }
    }
    assert_eq!(
        created["ad-impressions"], created["ad-clicks"],
        "ad-impressions and ad-clicks need the same partition count (SPEC: keyed by impression_id)"
    );
    let generator = service_argv(&compose, "generator");
    if let Some(p) = flag_value(&generator, "--partitions") {
        assert_eq!(p, created["ad-impressions"].to_string(), "generator --partitions matches the topics service");
    }
}

#[test]
fn the_host_runs_plugins_that_build_plugins_sh_produces() {
    let compose = Compose::load();
    let host = compose.service("host");
    let env = environment(host);
    // scripts/build-plugins.sh (run before the tests) writes target/plugins/<crate>.wasm for each
    // plugins/<crate>/: the directory the compose file mounts.
    for entry in std::fs::read_dir(workspace().join("plugins")).expect("plugins/") {
        let name = entry.expect("plugins/ entry").file_name().to_string_lossy().into_owned();
        let built = workspace().join("target/plugins").join(format!("{name}.wasm"));
        assert!(built.is_file(), "{} is missing: scripts/build-plugins.sh no longer writes it", built.display());
    }
    let mounts = mounts(host);
    let plugin_mount = mounts
        .iter()
        .find(|m| m.kind == "bind" && m.source.trim_start_matches("./").trim_end_matches('/') == "target/plugins")
        .unwrap_or_else(|| panic!("host must bind-mount ./target/plugins (where build-plugins.sh writes): {mounts:?}"));
    assert!(plugin_mount.read_only, "the plugins are mounted read-only");
    let packages = workspace_packages();
    let plugins = env.get("ADSTREAM_PLUGINS").expect("host sets ADSTREAM_PLUGINS");
    assert!(!plugins.trim().is_empty(), "ADSTREAM_PLUGINS names at least one plugin");
    for path in plugins.split(',').map(str::trim) {
        let file = path
            .strip_prefix(&format!("{}/", plugin_mount.target.trim_end_matches('/')))
            .unwrap_or_else(|| panic!("plugin {path} is not under the mount {}", plugin_mount.target));
        let crate_name = file.strip_suffix(".wasm").unwrap_or_else(|| panic!("plugin {path} is not a .wasm"));
        assert!(!crate_name.contains('/'), "build-plugins.sh writes no subdirectories: {path}");
        let dir = format!("plugins/{crate_name}");
        // A Python plugin is built from its app.py (build-plugins.sh, with componentize-py).
        if workspace().join(&dir).join("app.py").is_file() {
            continue;
        }
        assert!(
            workspace().join(&dir).join("Cargo.toml").is_file(),
            "{path}: there is no crate {dir}/ or Python plugin {dir}/app.py to build it from"
        );
        let pkg = packages
            .iter()
            .find(|p| p.dir == dir)
            .unwrap_or_else(|| panic!("{dir} is not a workspace member, so build-plugins.sh cannot build it"));
        assert_eq!(pkg.name, crate_name, "build-plugins.sh builds -p <directory name>");
    }
    let cache = env.get("ADSTREAM_PLUGIN_CACHE").expect("host sets ADSTREAM_PLUGIN_CACHE");
    assert!(
        mounts
            .iter()
            .any(|m| m.kind == "volume" && (cache == &m.target || cache.starts_with(&format!("{}/", m.target)))),
        "ADSTREAM_PLUGIN_CACHE ({cache}) should be on a named volume, to survive restarts"
    );
    // The host needs time to commit its last transaction on SIGTERM: a transaction step waits
    // at most STEP_DEADLINE (host/src/sink/kafka.rs).
    let flush = read("host/src/sink/kafka.rs")
        .lines()
        .find(|l| l.contains("const STEP_DEADLINE"))
        .and_then(|l| l.split("from_secs(").nth(1)?.split(')').next()?.trim().parse::<u64>().ok())
        .expect("STEP_DEADLINE in host/src/sink/kafka.rs");
    let grace = host.get("stop_grace_period").map(scalar).map(|s| go_duration(&s)).unwrap_or(Duration::from_secs(10));
    assert!(
        grace > Duration::from_secs(flush),
        "host's stop_grace_period ({grace:?}) must exceed the {flush}s flush timeout"
    );
    let ports: Vec<String> =
        host.get("ports").and_then(Value::as_array).map(|p| p.iter().map(scalar).collect()).unwrap_or_default();
    // One port of this machine per replica, from 8081, onto the console's 8081.
    assert!(
        ports.iter().any(|p| p.starts_with("8081") && p.ends_with(":8081")),
        "host publishes 8081 (and up, one per replica) for the web console: {ports:?}"
    );
}

#[test]
fn the_host_and_tail_command_lines_are_accepted_by_adstream() {
    let compose = Compose::load();
    let bin = adstream();
    for name in ["host", "tail"] {
        if !compose.services().contains_key(name) {
            assert_ne!(name, "host", "there is a host service");
            continue;
        }
        let argv = service_argv(&compose, name);
        assert_eq!(argv.first().map(String::as_str), Some("adstream"), "`{name}` runs adstream: {argv:?}");
        check_command_line(name, &bin, &argv[1..], &environment(compose.service(name)), "ADSTREAM_");
    }
    let host_argv = service_argv(&compose, "host");
    assert_eq!(host_argv.get(1).map(String::as_str), Some("run"), "the host service runs `adstream run`");
    if let Some(tail) = compose.services().get("tail") {
        assert_eq!(
            service_argv(&compose, "tail").get(1).map(String::as_str),
            Some("tail"),
            "tail runs `adstream tail`"
        );
        let profiles = tail.get("profiles").map(argv).unwrap_or_default();
        assert!(profiles.iter().any(|p| p == "tail"), "tail is optional: profile `tail`");
    }
}

#[test]
fn the_host_settings_load() {
    // `adstream replay` resolves the same time and plugin settings as `run` (same flags, same
    // variables) and loads the plugins, without Kafka. Paths under the container's mounts are
    // mapped to the working tree (bind mounts) or to fresh directories (named volumes).
    let compose = Compose::load();
    let host = compose.service("host");
    let scratch = tempfile::tempdir().unwrap();
    let mut mapping: Vec<(String, PathBuf)> = Vec::new();
    for (i, m) in mounts(host).iter().enumerate() {
        let local = if m.kind == "bind" {
            workspace().join(&m.source)
        } else {
            let dir = scratch.path().join(format!("volume-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        mapping.push((m.target.trim_end_matches('/').to_owned(), local));
    }
    let map_path = |value: &str| -> String {
        value
            .split(',')
            .map(|item| {
                for (target, local) in &mapping {
                    if item == target {
                        return local.display().to_string();
                    }
                    if let Some(rest) = item.strip_prefix(&format!("{target}/")) {
                        return local.join(rest).display().to_string();
                    }
                }
                item.to_owned()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let env: BTreeMap<String, String> = environment(host)
        .into_iter()
        .map(|(k, v)| {
            let v = map_path(&v);
            (k, v)
        })
        .collect();
    let missing: Vec<&str> = env["ADSTREAM_PLUGINS"].split(',').filter(|p| !Path::new(p).is_file()).collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED loading the host's plugins: {missing:?} not built (run `bash scripts/build-plugins.sh`)");
        return;
    }
    let empty = scratch.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = clean_command(&adstream());
    cmd.arg("replay").arg("--impressions").arg(&empty).arg("--clicks").arg(&empty);
    cmd.arg("--out").arg(scratch.path().join("out.jsonl"));
    cmd.envs(&env).env("ADSTREAM_LOG", "warn");
    let out = run(cmd);
    assert!(out.status.success(), "the host service's settings do not load:\n{}", text(&out));
}

#[test]
fn the_generator_command_line_is_accepted_by_adgen() {
    let compose = Compose::load();
    let argv = service_argv(&compose, "generator");
    assert_eq!(argv.first().map(String::as_str), Some("adgen"), "the generator service runs adgen: {argv:?}");
    let bin = sibling_binary("adgen");
    if !bin.is_file() {
        eprintln!(
            "SKIPPED checking the generator's command line: {} does not exist (build it: cargo build --release -p adgen)",
            bin.display()
        );
        return;
    }
    let env = environment(compose.service("generator"));
    check_command_line("generator", &bin, &argv[1..], &env, "ADGEN_");

    // The exact arguments, writing to files instead of Kafka: adgen must accept the combination
    // (conflicts, requirements, value checks) and start writing.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut cmd = clean_command(&bin);
    cmd.args(&argv[1..]).arg("--jsonl").arg(&out_dir).envs(&env);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("starting adgen"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = |name: &str| std::fs::metadata(out_dir.join(name)).map(|m| m.len()).unwrap_or(0);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            assert!(status.success(), "adgen {} --jsonl DIR failed:\n{stderr}", argv[1..].join(" "));
            break;
        }
        if written("ad-impressions.jsonl") > 0 {
            break; // running and writing; the rest is the generator's own tests' business
        }
        assert!(Instant::now() < deadline, "adgen {} wrote nothing in 30 s", argv[1..].join(" "));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dockerfile_builds_the_binaries_the_services_run() {
    let file = Dockerfile::load("Dockerfile");
    let packages = workspace_packages();
    let patterns = dockerignore(&workspace());

    // COPY sources exist in the context and are not left out of it; --from names a stage.
    let names: BTreeSet<&str> = file.stages.iter().filter_map(|s| s.name.as_deref()).collect();
    let mut copied_files = BTreeSet::new();
    for stage in &file.stages {
        for i in stage.instructions.iter().filter(|i| i.keyword == "COPY" || i.keyword == "ADD") {
            let (from, sources, _) = copy_parts(&i.args);
            match from {
                Some(from) => {
                    assert!(names.contains(from.as_str()), "COPY --from={from}: no such stage");
                    copied_files.extend(sources.iter().map(|s| s.rsplit('/').next().unwrap().to_owned()));
                }
                None => {
                    for s in sources {
                        assert!(workspace().join(&s).exists(), "COPY {s}: not in the build context");
                        assert!(s == "." || !ignored(&patterns, &s), "COPY {s}: excluded by .dockerignore");
                    }
                }
            }
        }
    }

    // The build: the pinned toolchain first, then cargo build of workspace packages.
    let builder_index = file
        .stages
        .iter()
        .position(|s| s.instructions.iter().any(|i| i.keyword == "RUN" && i.args.contains("cargo build")))
        .expect("a stage runs cargo build");
    let builder = &file.stages[builder_index];
    let pos = |pred: &dyn Fn(&Instruction) -> bool| builder.instructions.iter().position(pred);
    let build_at = pos(&|i| i.keyword == "RUN" && i.args.contains("cargo build")).unwrap();
    let toolchain_at = pos(&|i| i.keyword == "RUN" && i.args.contains("rustup toolchain install"))
        .expect("the builder installs the toolchain of rust-toolchain.toml (`rustup toolchain install`)");
    let toolchain_file_at =
        pos(&|i| i.keyword == "COPY" && copy_parts(&i.args).1.iter().any(|s| s == "rust-toolchain.toml" || s == "."))
            .expect("the builder copies rust-toolchain.toml");
    assert!(
        toolchain_file_at < toolchain_at && toolchain_at < build_at,
        "COPY rust-toolchain.toml, rustup toolchain install, cargo build: in that order"
    );
    let build = &builder.instructions[build_at].args;
    // The words of the `cargo build` command itself, not of the other commands in that RUN.
    let cargo_build = build
        .split(&['&', ';', '|'][..])
        .find(|c| c.contains("cargo build"))
        .expect("the RUN has a cargo build command");
    let words: Vec<&str> = cargo_build.split_whitespace().collect();
    let built: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p" || w[0] == "--package")
        .map(|w| w[1])
        .chain(words.iter().filter_map(|w| w.strip_prefix("--package=")))
        .collect();
    assert!(words.contains(&"--release"), "the images ship release builds: {cargo_build}");
    for pkg in &built {
        assert!(packages.iter().any(|p| p.name == *pkg), "cargo build -p {pkg}: no such workspace package");
    }
    for (pkg, bin) in [("adstream", "adstream"), ("adgen", "adgen")] {
        let package =
            packages.iter().find(|p| p.name == pkg).unwrap_or_else(|| panic!("workspace package {pkg} is gone"));
        assert!(package.bins.iter().any(|b| b == bin), "package {pkg} has no binary {bin}");
        assert!(built.contains(&pkg), "the Dockerfile does not build -p {pkg}: {cargo_build}");
        assert!(
            build.contains(&format!("target/release/{bin}")),
            "the Dockerfile does not copy target/release/{bin} out"
        );
        assert!(copied_files.contains(bin), "no stage copies {bin} from the builder");
    }
    for required in ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", "wit"]
        .into_iter()
        .map(str::to_owned)
        .chain(packages.iter().flat_map(|p| [p.dir.clone(), format!("{}/Cargo.toml", p.dir), p.source.clone()]))
    {
        assert!(workspace().join(&required).exists(), "{required} does not exist");
        assert!(!ignored(&patterns, &required), ".dockerignore excludes {required}, which the build needs");
    }
    for heavy in ["target", ".git", ".kafka"] {
        assert!(ignored(&patterns, heavy), ".dockerignore should exclude {heavy}/");
    }

    // Entrypoints of the stages the compose file builds.
    let host = file.target(Some("host"));
    let (entrypoint, cmd) = file.entrypoint_and_cmd(host);
    assert_eq!(entrypoint, Some(vec!["adstream".to_owned()]), "the host image runs adstream");
    assert_eq!(cmd, Some(vec!["run".to_owned()]), "the host image's default command is run");
    assert!(std::ptr::eq(host, file.stages.last().unwrap()), "the host is the default (last) stage");
    let (entrypoint, _) = file.entrypoint_and_cmd(file.target(Some("generator")));
    assert_eq!(entrypoint, Some(vec!["adgen".to_owned()]), "the generator image runs adgen");

    // Builder and runtime: the same Debian release (the binaries need the builder's glibc).
    let codename = |image: &str| {
        ["bullseye", "bookworm", "trixie", "forky"]
            .into_iter()
            .find(|c| image.contains(c))
            .unwrap_or_else(|| panic!("{image}: name the Debian release in the tag"))
    };
    let builder_image = file.root_image(builder);
    let runtime_image = file.root_image(host);
    assert_eq!(codename(builder_image), codename(runtime_image), "builder {builder_image} vs runtime {runtime_image}");
    let runtime_user = user_of(&file, host);
    assert!(runtime_user.is_some_and(|u| u != "root" && u != "0"), "the runtime runs as a non-root user");
}

/// The USER in effect in a stage.
fn user_of(file: &Dockerfile, stage: &Stage) -> Option<String> {
    let mut user = file.stage(&stage.base).and_then(|p| user_of(file, p));
    for i in stage.instructions.iter().filter(|i| i.keyword == "USER") {
        user = Some(i.args.clone());
    }
    user
}

#[test]
fn the_runtime_image_installs_the_libraries_the_binaries_link() {
    // On Debian (as the images are), map each shared library the binaries load to its package.
    let has =
        |tool: &str| Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !has("ldd") || !has("dpkg") {
        eprintln!("SKIPPED the shared-library check: needs ldd and dpkg (a Debian machine)");
        return;
    }
    let file = Dockerfile::load("Dockerfile");
    let host = file.target(Some("host"));
    let mut chain = vec![host];
    while let Some(parent) = file.stage(&chain.last().unwrap().base) {
        chain.push(parent);
    }
    let installs: String = chain
        .iter()
        .flat_map(|s| &s.instructions)
        .filter(|i| i.keyword == "RUN" && i.args.contains("apt-get install"))
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    let installed: BTreeSet<&str> = installs.split_whitespace().collect();
    let mut binaries = vec![adstream()];
    if sibling_binary("adgen").is_file() {
        binaries.push(sibling_binary("adgen"));
    }
    for bin in binaries {
        let mut ldd = Command::new("ldd");
        ldd.arg(&bin);
        let out = run(ldd);
        assert!(out.status.success(), "ldd {}: {}", bin.display(), text(&out));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next().unwrap_or(""),
                None => line.split_whitespace().next().unwrap_or(""),
            };
            if !path.starts_with('/') {
                continue; // linux-vdso
            }
            // With a merged /usr, the loader finds /lib/x/libssl.so.3 where dpkg installed
            // /usr/lib/x/libssl.so.3: ask for both.
            let owner = [path.to_owned(), format!("/usr{path}")]
                .into_iter()
                .map(|p| {
                    let mut dpkg = Command::new("dpkg");
                    dpkg.arg("-S").arg(p);
                    run(dpkg)
                })
                .find(|out| out.status.success());
            let owner =
                owner.unwrap_or_else(|| panic!("{} links {path}, which no Debian package provides", bin.display()));
            let package = String::from_utf8_lossy(&owner.stdout);
            let package = package.split(':').next().unwrap().trim().to_owned();
            // glibc and libgcc are in every Debian image.
            if package == "libc6" || package == "libgcc-s1" {
                continue;
            }
            assert!(
                installed.contains(package.as_str()),
                "{} links {path} from {package}: the runtime stage must apt-get install {package}",
                bin.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus and Grafana

fn yaml_file(rel: &str) -> Value {
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel} is one YAML document");
    to_json(&docs[0])
}

/// The container path a service mounts `source` (relative to the workspace) at.
fn mounted_at(svc: &Value, source: &str) -> String {
    mounts(svc)
        .into_iter()
        .find(|m| m.kind == "bind" && m.source.trim_start_matches("./") == source)
        .map(|m| {
            assert!(m.read_only, "{source} is mounted read-only");
            m.target
        })
        .unwrap_or_else(|| panic!("{source} is not mounted into the service"))
}

/// Prometheus scrapes the host where it listens; Grafana's data source is that Prometheus; the
/// dashboard's every query names only metrics the host exports (`adstream::ops::metrics::NAMES`,
/// which `ops.rs` checks against a live `/metrics`), and it has the panels operators look for.
#[test]
fn the_monitoring_stack_reads_what_the_host_exports() {
    let compose = Compose::load();
    let host = compose.service("host");
    let addr: std::net::SocketAddr =
        environment(host)["ADSTREAM_HTTP_ADDR"].parse().expect("ADSTREAM_HTTP_ADDR is IP:PORT");
    assert!(addr.ip().is_unspecified(), "the host listens on all interfaces, so Prometheus can reach it");
    let host_ports: Vec<String> = host["ports"].as_array().expect("host ports").iter().map(scalar).collect();
    assert!(host_ports.iter().any(|p| p.ends_with(&format!(":{}", addr.port()))), "{host_ports:?}");
    // Several replicas: one port of this machine each (a range), and Prometheus finds them by DNS.
    let replicas = host["deploy"]["replicas"].as_u64().unwrap_or(1);
    assert!(replicas >= 2, "the compose file runs several hosts in one group");
    let range = host_ports.iter().find_map(|p| p.split(':').next()?.split_once('-')).expect("a port range");
    let (low, high): (u64, u64) = (range.0.parse().unwrap(), range.1.parse().unwrap());
    assert!(high - low + 1 >= replicas, "{host_ports:?} for {replicas} replicas");

    // Prometheus.
    let prometheus = compose.service("prometheus");
    let config_path = mounted_at(prometheus, "deploy/prometheus/prometheus.yml");
    assert!(argv(&prometheus["command"]).contains(&format!("--config.file={config_path}")));
    let config = yaml_file("deploy/prometheus/prometheus.yml");
    let jobs = config["scrape_configs"].as_array().expect("scrape_configs");
    let job = jobs.iter().find(|j| j["job_name"] == "adstream").expect("an adstream scrape job");
    assert_eq!(job["metrics_path"], "/metrics");
    let sd = &job["dns_sd_configs"][0];
    let names: Vec<String> = sd["names"].as_array().expect("dns_sd names").iter().map(scalar).collect();
    assert_eq!(names, ["host"], "every replica of the host service");
    assert_eq!((scalar(&sd["type"]).as_str(), sd["port"].as_u64()), ("A", Some(u64::from(addr.port()))));

    // Grafana: provisioning mounted where Grafana reads it, the data source, the dashboards folder.
    let grafana = compose.service("grafana");
    assert_eq!(mounted_at(grafana, "deploy/grafana/provisioning"), "/etc/grafana/provisioning");
    let dashboards_dir = mounted_at(grafana, "deploy/grafana/dashboards");
    let datasources = yaml_file("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &datasources["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    let prometheus_port = prometheus["ports"][0].as_str().and_then(|p| p.rsplit(':').next()).unwrap_or("9090");
    assert_eq!(ds["url"], format!("http://prometheus:{prometheus_port}"));
    let uid = ds["uid"].as_str().expect("the data source has a uid").to_owned();
    let providers = yaml_file("deploy/grafana/provisioning/dashboards/adstream.yml");
    assert_eq!(providers["providers"][0]["options"]["path"], dashboards_dir);
    let home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    assert_eq!(home, format!("{dashboards_dir}/adstream.json"));

    // The dashboard.
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/adstream.json")).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exported: BTreeSet<&str> = adstream::ops::metrics::NAMES.iter().copied().collect();
    let mut queried = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "panel {title:?} uses the provisioned data source");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title:?} has no queries"));
        assert!(!targets.is_empty(), "panel {title:?} has no queries");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a query of {title:?} has no expr"));
            let mut rest = expr;
            while let Some(at) = rest.find("adstream_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(
                    exported.contains(name.as_str()),
                    "panel {title:?} queries {name}, which the host does not export"
                );
                queried.insert(name.clone());
                rest = &rest[at + name.len()..];
            }
            exprs.push(expr.to_owned());
        }
    }
    let all = exprs.join("\n");
    for (what, needle) in [
        ("throughput", "rate(adstream_messages_consumed_total"),
        ("watermark lag", "adstream_watermark_delay_seconds"),
        ("late rate", "rate(adstream_late_events_total"),
        ("dead-letter rate", "rate(adstream_dead_lettered_total"),
        ("CTR per campaign", r#"adstream_result_value{plugin="ctr",field="ctr"}"#),
        ("engagement per device", r#"adstream_result_value{plugin="engagement",field="impressions"}"#),
    ] {
        assert!(all.contains(needle), "the dashboard has no {what} panel ({needle})");
    }
    assert!(queried.len() >= 10, "the dashboard queries {queried:?}");
}
