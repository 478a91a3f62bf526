//! The arm64 (aarch64) binary, cross-compiled on this amd64 machine by `scripts/build-release`,
//! run under Debian's `qemu-aarch64-static` (user-mode emulation, no binfmt registration): a
//! static aarch64 ELF; `--version`; `inject` on the seed Deployment byte for byte what the
//! amd64 release binary writes; the agent fetching a secret from moto and writing the same file,
//! mode and termination message as the amd64 agent.
//!
//! `scripts/test` builds both release binaries (`scripts/build-release --arch all`) and installs
//! the cross toolchain and QEMU (`scripts/install-cross-packages`) before `cargo test`; a missing
//! binary or emulator fails here with the command that makes it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common;
use crate::common::agent::ram_dir;
use crate::common::moto::Moto;

/// ELF e_machine of aarch64 and x86-64.
const EM_AARCH64: u16 = 183;
const EM_X86_64: u16 = 62;
const PT_INTERP: u32 = 3;

/// The release binary `scripts/build-release` wrote for `arch` (`amd64` or `arm64`).
pub fn release_binary(arch: &str) -> PathBuf {
    let triple = match arch {
        "amd64" => "x86_64-unknown-linux-gnu",
        "arm64" => "aarch64-unknown-linux-gnu",
        other => panic!("no release build for {other}"),
    };
    let path = common::repo_root()
        .join("target")
        .join(triple)
        .join("release/secret-inject");
    assert!(
        path.is_file(),
        "{} is missing: run `scripts/build-release --arch {arch}` (scripts/test does, after \
         scripts/install-cross-packages)",
        path.display()
    );
    path
}

/// `qemu-aarch64-static`, which runs an aarch64 Linux program on this machine.
fn qemu() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("qemu-aarch64-static"))
        .find(|p| p.is_file());
    found.expect(
        "qemu-aarch64-static not found: run scripts/install-cross-packages (Debian \
         qemu-user-static; scripts/test does)",
    )
}

/// A command that runs the `arch` release binary: natively, or under QEMU for arm64.
fn release_command(arch: &str) -> Command {
    let binary = release_binary(arch);
    if arch == "arm64" {
        let mut command = Command::new(qemu());
        command.arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// Run `command` (stdin closed); it must succeed.
pub fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// (e_machine, has a program interpreter) of an ELF64 little-endian file.
pub fn elf_machine_and_interp(elf: &[u8]) -> (u16, bool) {
    assert!(
        elf.len() >= 64 && elf[..4] == *b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!((elf[4], elf[5]), (2, 1), "not ELF64 little-endian");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    });
    (u16_at(18), interp)
}

#[test]
fn arm64_binary_is_a_static_aarch64_elf_and_prints_its_version() {
    let (machine, interp) =
        elf_machine_and_interp(&std::fs::read(release_binary("arm64")).unwrap());
    assert_eq!(
        machine, EM_AARCH64,
        "the arm64 release binary is not aarch64"
    );
    assert!(
        !interp,
        "the arm64 release binary asks for a program interpreter: it could not start FROM scratch"
    );
    let (machine, interp) =
        elf_machine_and_interp(&std::fs::read(release_binary("amd64")).unwrap());
    assert_eq!((machine, interp), (EM_X86_64, false));

    let mut command = release_command("arm64");
    command.arg("--version");
    let arm64 = run(command, "qemu-aarch64-static secret-inject --version");
    let version = String::from_utf8(arm64.stdout).unwrap();
    assert!(
        version.starts_with("secret-inject ") && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    let mut command = release_command("amd64");
    command.arg("--version");
    let amd64 = run(command, "secret-inject --version");
    assert_eq!(
        version,
        String::from_utf8(amd64.stdout).unwrap(),
        "both architectures built from the same source print the same version"
    );
}

#[test]
fn arm64_inject_writes_the_same_bytes_as_amd64() {
    let seed = common::repo_root().join("examples/webserver-deployment.yaml");
    let inject = |arch: &str| {
        let mut command = release_command(arch);
        command.arg("inject").arg("-f").arg(&seed);
        run(
            command,
            &format!("{arch} secret-inject inject -f {}", seed.display()),
        )
    };
    let (amd64, arm64) = (inject("amd64"), inject("arm64"));
    let text = String::from_utf8(arm64.stdout.clone()).unwrap();
    assert!(
        text.contains("secrets-init-container") && text.contains("secret-vol"),
        "arm64 inject did not inject:\n{text}"
    );
    assert!(
        amd64.stdout == arm64.stdout,
        "arm64 and amd64 inject outputs differ:\n--- amd64\n{}\n--- arm64\n{text}",
        String::from_utf8_lossy(&amd64.stdout)
    );
    // The warnings too (the seed mounts at /tmp and names no user).
    assert!(!arm64.stderr.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&amd64.stderr),
        String::from_utf8_lossy(&arm64.stderr)
    );
}

/// One agent run of the `arch` release binary with exactly `env`: (exit code, output,
/// termination message).
fn agent(arch: &str, env: &[(&str, &str)], scratch: &Path) -> (Option<i32>, String, String) {
    let termination = scratch.join(format!("termination-{arch}"));
    let mut command = release_command(arch);
    command
        .args(["--log-format", "plain", "agent"])
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", scratch)
        .env("SECRET_INJECT_TERMINATION_LOG", &termination)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = command.output().unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        std::fs::read_to_string(&termination).unwrap_or_default(),
    )
}

#[test]
fn arm64_agent_fetches_from_moto_and_writes_the_file_as_amd64_does() {
    use std::os::unix::fs::PermissionsExt as _;
    let moto = Moto::start();
    let value = "arm64: P@$$word\n\u{00e9}t\u{00e9}";
    let arn = moto.create_secret("eu-west-1", "db-password", value);
    let scratch = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let mut results = Vec::new();
    for arch in ["amd64", "arm64"] {
        let out = ram_dir();
        let out_path = out.path().to_str().unwrap().to_owned();
        let (code, output, termination) = agent(
            arch,
            &[
                ("AWS_ENDPOINT_URL", &endpoint),
                ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
                ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
                ("SECRET_ARN", &arn),
                ("SECRET_FILENAME", "db/password"),
                ("SECRET_INJECT_OUTPUT_DIR", &out_path),
            ],
            scratch.path(),
        );
        assert_eq!(code, Some(0), "{arch} agent:\n{output}");
        let file = out.path().join("db/password");
        let written = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{arch} agent wrote no {}: {e}\n{output}", file.display()));
        assert_eq!(written, value, "{arch}");
        let mode = file.metadata().unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o400, "{arch}");
        assert!(
            termination.contains("wrote 1 file(s) for 1 secret(s)"),
            "{arch}: {termination}"
        );
        assert!(!output.contains("P@$$word"), "{arch} logged the value");
        // The termination message names the output directory, which differs per run.
        results.push((written, mode, termination.replace(&out_path, "OUT")));
    }
    assert_eq!(
        results[0], results[1],
        "amd64 and arm64 agents wrote different results"
    );
}
