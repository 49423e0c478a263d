//! Bad configurations fail at start with a clear message and a non-zero exit.

use std::process::Command;

fn beacond(config: &str, dir: &std::path::Path) -> (bool, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run beacond");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config(dir: &std::path::Path, token: &str, members: &str) -> String {
    let client = common_port();
    let peer = common_port();
    // Its own DNS port, not the default 8600 another test's member may hold.
    let dns = common_port();
    format!(
        "name = \"n1\"\nid = 1\ndata_dir = \"{}\"\ncluster_token = \"{token}\"\n\
         [client]\nlisten = \"127.0.0.1:{client}\"\n[peer]\nlisten = \"127.0.0.1:{peer}\"\n\
         [dns]\nlisten = \"127.0.0.1:{dns}\"\n{members}",
        dir.join("data").display()
    )
}

fn common_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

#[test]
fn duplicate_member_ids_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let members = "[[initial_members]]\nid = 1\nname = \"a\"\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n\
                   [[initial_members]]\nid = 1\nname = \"b\"\npeer = \"127.0.0.1:3\"\nclient = \"127.0.0.1:4\"\n";
    let (success, stderr) = beacond(&config(dir.path(), "t", members), dir.path());
    assert!(!success);
    assert!(stderr.contains("duplicate member id 1"), "{stderr}");
}

#[test]
fn unparsable_addresses_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(dir.path(), "t", "").replace("127.0.0.1:", "not-an-ip:");
    let (success, stderr) = beacond(&text, dir.path());
    assert!(!success);
    assert!(
        stderr.contains("is not an IP address with a port"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("data");
    std::fs::write(&file, b"a file, not a directory").expect("write");
    let (success, stderr) = beacond(&config(dir.path(), "t", ""), dir.path());
    assert!(!success);
    assert!(stderr.contains("data directory"), "{stderr}");
}

#[test]
fn a_data_dir_from_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = config(dir.path(), "cluster-a", "");
    let path = dir.path().join("a.toml");
    std::fs::write(&path, &first).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("--config")
        .arg(&path)
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The client port is bound after the data directory has recorded its identity.
    let client = first
        .lines()
        .find_map(|line| {
            line.strip_prefix("listen = \"")
                .map(|rest| rest.trim_end_matches('"').to_string())
        })
        .expect("client listen line");
    while std::net::TcpStream::connect(&client).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "first member never created its data"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (success, stderr) = beacond(&config(dir.path(), "cluster-b", ""), dir.path());
    assert!(!success);
    assert!(stderr.contains("belongs to cluster"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_beacond"))
        .args(["--config", "/nonexistent/beacon.toml"])
        .output()
        .expect("run beacond");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}
