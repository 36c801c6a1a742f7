//! Pulls that need trust or credentials: a registry with a test-made CA,
//! and one behind htpasswd basic auth (credentials from hull's config and
//! from docker's config.json).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, image, write_oci_archive};
use hull_tests::registry::{hosts_toml, htpasswd, test_certificates, Registry};

fn have_tools() -> bool {
    let found = |b: &str| {
        Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !["docker-registry", "skopeo", "openssl", "htpasswd"]
        .iter()
        .all(|b| found(b))
    {
        eprintln!("skipped: docker-registry, skopeo, openssl and htpasswd are needed (tests/run.sh installs them)");
        return false;
    }
    true
}

fn archive(dir: &Path, text: &str) -> std::path::PathBuf {
    let extra = BTreeMap::from([("hello".to_owned(), text.as_bytes().to_vec())]);
    let path = dir.join("img.tar");
    write_oci_archive(&path, &image(busybox_layer(&extra)), "seed");
    path
}

fn pull(d: &Daemon, name: &str) -> Output {
    d.hullctl_run(&["pull", "-q", name])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_fails_clearly_then_works_once_hosts_toml_names_it() {
    if !is_root() || !have_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = test_certificates(tmp.path());
    let reg = Registry::start_with(
        "",
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
    );
    reg.seed(&archive(tmp.path(), "over tls\n"), "secure/app", "1", None);
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(&certs).expect("certs.d");
    let d = Daemon::start_with_config(
        "pull-tls",
        &format!("[registry]\nconfig_path = \"{}\"\n", certs.display()),
    )
    .await;
    let name = format!("{}/secure/app:1", reg.host);
    let out = pull(&d, &name);
    assert!(!out.status.success(), "a pull trusted an unknown CA");
    let err = stderr(&out);
    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );

    hosts_toml(
        &certs,
        &reg.host,
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\n",
            reg.host,
            ca.display()
        ),
    );
    let out = pull(&d, &name);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "tls", "cat", "/hello"]),
        "over tls\n"
    );

    // skip_verify instead of the CA works too.
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"https://{}\"\nskip_verify = true\n", reg.host),
    );
    d.ctr_ok(&["images", "rm", "--sync", &name]);
    let out = pull(&d, &name);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_says_what_is_missing_and_works_with_credentials() {
    if !is_root() || !have_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = tmp.path().join("htpasswd");
    htpasswd(&users, "hull", "s3cret");
    let reg = Registry::start(&format!(
        "auth:\n  htpasswd:\n    realm: hull-test\n    path: {}\n",
        users.display()
    ));
    reg.seed(
        &archive(tmp.path(), "behind basic auth\n"),
        "private/app",
        "1",
        Some("hull:s3cret"),
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let name = format!("{}/private/app:1", reg.host);
    let base = format!(
        "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n",
        certs.display(),
        tmp.path().join("no-config.json").display()
    );

    // No credentials anywhere.
    let d = Daemon::start_with_config("auth-none", &base).await;
    let out = pull(&d, &name);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("needs credentials"),
        "{err}"
    );
    drop(d);

    // Wrong ones from hull's config.
    let wrong = format!(
        "{base}\n[registry.auths.\"{}\"]\nusername = \"hull\"\npassword = \"nope\"\n",
        reg.host
    );
    let d = Daemon::start_with_config("auth-wrong", &wrong).await;
    let err = stderr(&pull(&d, &name));
    assert!(err.contains("refused the credentials"), "{err}");
    drop(d);

    // Right ones from hull's config.
    let right = format!(
        "{base}\n[registry.auths.\"{}\"]\nusername = \"hull\"\npassword = \"s3cret\"\n",
        reg.host
    );
    let d = Daemon::start_with_config("auth-config", &right).await;
    let out = pull(&d, &name);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "basic", "cat", "/hello"]),
        "behind basic auth\n"
    );
    drop(d);

    // From docker's config.json (`auths` with base64 user:password).
    let json = tmp.path().join("config.json");
    std::fs::write(
        &json,
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"aHVsbDpzM2NyZXQ=\"}}}}}}",
            reg.host
        ),
    )
    .expect("config.json");
    let from_json = format!(
        "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n",
        certs.display(),
        json.display()
    );
    let d = Daemon::start_with_config("auth-json", &from_json).await;
    let out = pull(&d, &name);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_the_registry_challenge_and_renewed_when_expired() {
    if !is_root() || !have_tools() {
        return;
    }
    use hull_tests::tokens::TokenServer;
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokens = TokenServer::start(tmp.path(), "hull", "s3cret");
    let reg = Registry::start(&tokens.registry_auth());
    reg.seed(
        &archive(tmp.path(), "behind a token\n"),
        "private/app",
        "1",
        Some("hull:s3cret"),
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let name = format!("{}/private/app:1", reg.host);
    let config = format!(
        "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n\n[registry.auths.\"{}\"]\nusername = \"hull\"\npassword = \"s3cret\"\n",
        certs.display(),
        tmp.path().join("none.json").display(),
        reg.host
    );
    let d = Daemon::start_with_config("auth-bearer", &config).await;
    // Tokens that the registry stops taking after about 5 s, though the
    // token server says they last an hour.
    tokens.exp_offset.store(-55, Ordering::SeqCst);
    let before = tokens.issued.load(Ordering::SeqCst);
    let out = pull(&d, &name);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stderr(&out),
        d.log(),
        reg.log()
    );
    let first = tokens.issued.load(Ordering::SeqCst) - before;
    assert!(first >= 1, "no token was fetched");
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "bearer", "cat", "/hello"]),
        "behind a token\n"
    );
    // Once the kept token has expired, the registry refuses it and hulld
    // fetches a new one.
    std::thread::sleep(std::time::Duration::from_secs(7));
    d.ctr_ok(&["images", "rm", "--sync", &name]);
    let out = pull(&d, &name);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert!(
        tokens.issued.load(Ordering::SeqCst) - before > first,
        "the expired token was not renewed"
    );

    // Without credentials the token server refuses, and the error says so.
    let anon = format!(
        "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n",
        certs.display(),
        tmp.path().join("none.json").display()
    );
    let d2 = Daemon::start_with_config("auth-bearer-anon", &anon).await;
    let out = pull(&d2, &name);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401") && err.contains("token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hullctl_login_hands_its_credentials_to_the_daemon_and_logout_takes_them_back() {
    if !is_root() || !have_tools() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = tmp.path().join("htpasswd");
    htpasswd(&users, "hull", "s3cret");
    let reg = Registry::start(&format!(
        "auth:\n  htpasswd:\n    realm: hull-test\n    path: {}\n",
        users.display()
    ));
    reg.seed(
        &archive(tmp.path(), "logged in\n"),
        "private/app",
        "1",
        Some("hull:s3cret"),
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    // The daemon has no credentials of its own: they come from the client.
    let d = Daemon::start_with_config(
        "auth-login",
        &format!(
            "[registry]\nconfig_path = \"{}\"\ndocker_config = \"{}\"\n",
            certs.display(),
            tmp.path().join("daemon-has-none.json").display()
        ),
    )
    .await;
    let client_config = tmp.path().join("client-docker");
    let hull = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = d
            .hullctl()
            .env("DOCKER_CONFIG", &client_config)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hullctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("hullctl")
    };
    let name = format!("{}/private/app:1", reg.host);
    let out = hull(&["pull", "-q", &name], "");
    assert!(!out.status.success(), "pulled without credentials");
    let out = hull(
        &["login", &reg.host, "-u", "hull", "--password-stdin"],
        "s3cret\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = std::fs::read_to_string(client_config.join("config.json")).expect("config.json");
    assert!(
        stored.contains(&reg.host) && stored.contains("aHVsbDpzM2NyZXQ="),
        "{stored}"
    );
    let out = hull(&["pull", "-q", &name], "");
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "login", "cat", "/hello"]),
        "logged in\n"
    );
    let out = hull(&["logout", &reg.host], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    d.ctr_ok(&["images", "rm", "--sync", &name]);
    let out = hull(&["pull", "-q", &name], "");
    assert!(!out.status.success(), "pulled after logout");
    assert!(
        stderr(&out).contains("needs credentials"),
        "{}",
        stderr(&out)
    );
}
