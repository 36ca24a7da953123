//! Helpers for unit tests that must survive what would kill the test binary (a SIGBUS).

/// Runs `body` in a child process (this test binary again, running only `test`, the test's full
/// name) and fails with the signal's name if the child dies of one; in the child, runs `body` and
/// exits. A test that dies of SIGBUS in-process would take the whole test run with it.
pub(crate) fn in_child(test: &str, body: impl FnOnce()) {
    const CHILD: &str = "KALYPSO_TEST_CHILD";
    if std::env::var_os(CHILD).is_some_and(|v| v == test) {
        body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{test} in a child process:\n{text}");
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&out.status) {
        let name = match signal {
            libc::SIGBUS => "SIGBUS".to_string(),
            libc::SIGSEGV => "SIGSEGV".to_string(),
            other => other.to_string(),
        };
        panic!("{test}: the child died of signal {name}\n{text}");
    }
    assert!(out.status.success(), "{test}: {}\n{text}", out.status);
    assert!(
        text.contains("1 passed"),
        "{test}: the child did not run the test\n{text}"
    );
}
