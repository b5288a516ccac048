//! The `quiver` shell, driven through a pseudo-terminal like a person would (tables,
//! completion, multi-line input, Ctrl-C, history across restarts, live progress), and
//! its non-interactive modes through plain pipes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use expectrl::{ControlCode, Session};

use crate::common::testdata;

const LONG_QUERY: &str =
    "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey + b.l_orderkey > 5;";

fn repository_root() -> PathBuf {
    testdata().join("..")
}

fn quiver() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .current_dir(repository_root())
        .args(["--init", "testdata/tpch/create_tables.sql"])
        .env("QUIVER_PAGER", "")
        .env("QUIVER_EPHEMERAL", "true")
        .env_remove("QUIVER_USER")
        .env_remove("QUIVER_PASSWORD");
    command
}

type Shell = Session;

/// The interactive shell in a pseudo-terminal, at its first prompt.
fn open_shell(history: &Path) -> Shell {
    let mut command = quiver();
    command.env("QUIVER_HISTORY", history).env("TERM", "xterm");
    let mut shell = Session::spawn(command).expect("shell starts in a pty");
    shell
        .get_process_mut()
        .set_window_size(160, 50)
        .expect("window size");
    shell.set_expect_timeout(Some(Duration::from_secs(60)));
    shell.expect("quiver> ").expect("first prompt");
    shell
}

/// The web UI's front page from 127.0.0.1:`port`, status line and all.
fn http_get_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

fn expect(shell: &mut Shell, text: &str) {
    if let Err(error) = shell.expect(text) {
        panic!("expected `{text}` from the shell: {error}");
    }
}

#[test]
fn interactive_shell_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut shell = open_shell(&history);

    // A query over testdata: an aligned table with types in the header, a row count
    // and timing.
    shell
        .send_line(
            "SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 3 ORDER BY n_nationkey;",
        )
        .unwrap();
    expect(&mut shell, "│ bigint      │ varchar   │");
    expect(&mut shell, "ALGERIA");
    expect(&mut shell, "(3 rows)");
    expect(&mut shell, "Time: ");
    expect(&mut shell, "planning");

    // Tab completes a table name from the live catalog.
    shell.send("SELECT count(*) AS regions FROM regi").unwrap();
    shell.send("\t").unwrap();
    shell.send_line(";").unwrap();
    expect(&mut shell, "regions");
    expect(&mut shell, "(1 row)");

    // A statement over several lines runs once it ends with `;`.
    shell.send_line("SELECT 20 + 22").unwrap();
    expect(&mut shell, "-> ");
    shell.send_line("AS answer;").unwrap();
    expect(&mut shell, "answer");
    expect(&mut shell, "42");

    // Meta-commands.
    shell.send_line("\\d nation").unwrap();
    expect(&mut shell, "n_regionkey");
    shell.send_line("\\dt").unwrap();
    expect(&mut shell, "lineitem");
    shell.send_line("\\cluster").unwrap();
    expect(&mut shell, "exec-");
    // Eleven columns do not fit 160 characters: the middle ones give way to `…`.
    expect(&mut shell, "(2 rows, 11 columns,");
    // The embedded cluster's web UI: `\ui` says where, and it answers there.
    shell.send_line("\\ui").unwrap();
    let found = shell
        .expect(expectrl::Regex(r"Web UI: http://127\.0\.0\.1:(\d+)/"))
        .expect("the web UI's address");
    let port: u16 = String::from_utf8_lossy(&found[1]).parse().unwrap();
    let page = http_get_page(port);
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>Quiver</title>"));
    shell.send_line("\\format csv").unwrap();
    // Input typed before the prompt is back may be flushed by the terminal mode switch:
    // wait for the echo of this line, then for the next prompt.
    expect(&mut shell, "format csv");
    expect(&mut shell, "quiver> ");
    shell.send_line("SELECT 1 AS a, 'x' AS b;").unwrap();
    expect(&mut shell, "a,b\r\n1,x");
    shell.send_line("\\format table").unwrap();
    expect(&mut shell, "format table");
    expect(&mut shell, "quiver> ");
    shell
        .send_line("\\explain SELECT count(*) FROM orders")
        .unwrap();
    expect(&mut shell, "distributed_plan");
    shell.send_line("\\nonsense").unwrap();
    expect(&mut shell, "unknown command");

    // A syntax error shows where it is.
    shell.send_line("SELECT 1 FORM nation;").unwrap();
    expect(&mut shell, "SELECT 1 FORM nation");
    expect(&mut shell, "^");

    // A long query draws live progress; Ctrl-C cancels it and the shell goes on.
    shell.send_line(LONG_QUERY).unwrap();
    expect(&mut shell, "running)");
    shell.send(ControlCode::EndOfText).unwrap();
    expect(&mut shell, "query cancelled");
    shell.send_line("SELECT 'still here' AS status;").unwrap();
    expect(&mut shell, "│ still here");
    expect(&mut shell, "quiver> ");

    // Ctrl-D quits.
    shell.send(ControlCode::EndOfTransmission).unwrap();
    assert_exits_cleanly(&mut shell);

    // History survives a restart: the previous statement comes back with the up arrow.
    let saved = std::fs::read_to_string(&history).expect("history file written");
    assert!(saved.contains("still here"), "{saved}");
    let mut shell = open_shell(&history);
    shell.send("\x1b[A").unwrap();
    shell.send("\r").unwrap();
    expect(&mut shell, "│ still here");
    expect(&mut shell, "(1 row)");
    expect(&mut shell, "quiver> ");
    shell.send_line("\\q").unwrap();
    assert_exits_cleanly(&mut shell);
}

/// Waits (bounded) for the shell to exit with status 0; kills it otherwise.
fn assert_exits_cleanly(shell: &mut Shell) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match shell.get_process().status() {
            Ok(expectrl::WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(expectrl::WaitStatus::Exited(_, 0)) => return,
            other => {
                let _ = shell.get_process_mut().exit(true);
                panic!("the shell did not exit cleanly: {other:?}");
            }
        }
    }
}

#[test]
fn scripts_pipes_and_formats() {
    // -c with a format: exact output, nothing else on stdout, no progress anywhere.
    let output = quiver()
        .args([
            "-c",
            "SELECT count(*) AS n FROM lineitem a JOIN lineitem b ON a.l_orderkey = b.l_orderkey",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stdout.starts_with("[{\"n\":") && stdout.ends_with("}]\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("tasks") && !stderr.contains("tasks"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "no progress drawing when piped: {stderr:?}"
    );

    // Every format names the columns.
    for (format, expected) in [
        ("csv", "k,v\n1,a\n"),
        ("tsv", "k\tv\n1\ta\n"),
        ("ndjson", "{\"k\":1,\"v\":\"a\"}\n"),
        ("markdown", "| k | v |\n| ---: | --- |\n| 1 | a |\n"),
    ] {
        let output = quiver()
            .args(["-c", "SELECT 1 AS k, 'a' AS v", "--format", format])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            expected,
            "{format}"
        );
    }

    // SQL on stdin, with a meta-command, results to a file.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let mut child = quiver()
        .args(["--format", "csv", "--output", out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"SELECT r_name FROM region\nWHERE r_regionkey = 1;\n\\format tsv\nSELECT 2 AS two;\n",
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "r_name\nAMERICA\ntwo\n2\n"
    );

    // A script file: stops at the first error, exits non-zero, marks the spot.
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "SELECT 1 AS ok;\nSELECT * FROM nation WERE n_nationkey = 1;\nSELECT 3;\n",
    )
    .unwrap();
    let output = quiver()
        .args(["-f", script.to_str().unwrap(), "--format", "csv"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "ok\n1\n");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("Error:") && stderr.contains('^'),
        "{stderr}"
    );
    assert!(
        stderr.contains("SELECT * FROM nation WERE n_nationkey = 1"),
        "{stderr}"
    );

    // --help tells a newcomer the modes, meta-commands and subcommands.
    let help = quiver().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in [
        "--connect",
        "--format",
        "\\cluster",
        "scheduler",
        "executor",
        "QUIVER_HISTORY",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let help = quiver().args(["scheduler", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for needle in ["--user", "--cluster-secret", "--tls-cert"] {
        assert!(help.contains(needle), "scheduler --help lacks {needle}");
    }
}

#[test]
fn wrong_password_and_login_from_the_cli() {
    // A scheduler that requires a login, with its executor, as separate processes.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut scheduler = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "scheduler",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--user",
            "bob:builder",
        ])
        .env("QUIVER_CLUSTER_SECRET", "cli-test-secret")
        .env("QUIVER_EPHEMERAL", "true")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut executor = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["executor", "--scheduler", &url, "--slots", "1"])
        .env("QUIVER_CLUSTER_SECRET", "cli-test-secret")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = |password: &str| {
        let mut attempts = 0;
        loop {
            let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
                .args([
                    "--connect",
                    &url,
                    "-u",
                    "bob",
                    "-c",
                    "SELECT 7 AS seven",
                    "--format",
                    "csv",
                ])
                .env("QUIVER_PASSWORD", password)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            attempts += 1;
            if stderr.contains("connect") && attempts < 50 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).to_string(),
                stderr,
            );
        }
    };
    let (ok, stdout, stderr) = run("builder");
    let (wrong_ok, _, wrong_stderr) = run("guess");

    // Without a user, a script is told how to log in...
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["--connect", &url, "-c", "SELECT 1"])
        .env_remove("QUIVER_USER")
        .env_remove("QUIVER_PASSWORD")
        .output()
        .unwrap();
    let no_user_stderr = String::from_utf8_lossy(&output.stderr).to_string();
    // ...and a person at a terminal is asked for the user name and the password.
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .args(["--connect", &url])
        .env("QUIVER_HISTORY", dir.path().join("history"))
        .env("QUIVER_PAGER", "")
        .env("QUIVER_EPHEMERAL", "true")
        .env_remove("QUIVER_USER")
        .env_remove("QUIVER_PASSWORD");
    let mut shell = Session::spawn(command).expect("shell starts in a pty");
    shell.set_expect_timeout(Some(Duration::from_secs(30)));
    let prompted = shell.expect("User: ").is_ok()
        && shell.send_line("bob").is_ok()
        && shell.expect("Password: ").is_ok()
        && shell.send_line("builder").is_ok()
        && shell.expect("quiver> ").is_ok()
        && shell.send_line("SELECT 6 * 7 AS answer;").is_ok()
        && shell.expect("(1 row)").is_ok();
    let _ = shell.get_process_mut().exit(true);
    let _ = scheduler.kill();
    let _ = executor.kill();
    let _ = scheduler.wait();
    let _ = executor.wait();
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "seven\n7\n");
    assert!(!wrong_ok);
    assert!(
        wrong_stderr.contains("invalid user name or password"),
        "{wrong_stderr}"
    );
    assert!(!output.status.success());
    assert!(
        no_user_stderr.contains("requires a login"),
        "{no_user_stderr}"
    );
    assert!(
        prompted,
        "the shell asks for credentials, then runs queries"
    );
}
