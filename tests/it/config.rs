//! Config tests: every example validates, and `troupe check` reports diagnostics with positions.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn troupe_check(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("check")
        .arg(file)
        .output()
        .unwrap_or_else(|err| panic!("cannot run troupe: {err}"))
}

#[test]
fn every_example_validates() {
    let files = examples();
    assert!(
        files.iter().any(|path| path.ends_with("troupe.toml")),
        "{files:?}"
    );
    for path in files {
        if let Err(err) = troupe_config::load(&path) {
            panic!("{} does not validate:\n{err}", path.display());
        }
    }
}

#[test]
fn check_accepts_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/troupe.toml");
    let output = troupe_check(&example);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("config ok"), "stdout:\n{stdout}");
}

#[test]
fn check_reports_a_typo_with_its_position() {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .unwrap_or_else(|err| panic!("{err}"));
    // The typo is on line 5; its value starts at column 9.
    let text = "[models.fast]\nprovider = \"scripted\"\n\n[agents.researcher]\nmodel = \"fst\"\n";
    file.write_all(text.as_bytes())
        .unwrap_or_else(|err| panic!("{err}"));
    let output = troupe_check(file.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(
            ":5:9: agents.researcher.model: no model named \"fst\" (did you mean \"fast\"?)"
        ),
        "stderr:\n{stderr}"
    );
}
