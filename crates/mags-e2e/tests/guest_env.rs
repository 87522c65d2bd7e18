//! What scripts written for the hosted product expect of the guest, on
//! real VMs: `npm`, `pip` and `python3 -m venv` work, `/jfs` exists and is
//! kept with a persistent workspace, and `apk` (the hosted guest is
//! Alpine) installs through apt with Alpine names mapped, refusing a name
//! it cannot map without changing anything. Installs go through the
//! egress proxy to the public registries.

use mags_e2e::{stderr, Server};

#[test]
fn npm_pip_venv_jfs_and_apk_work_in_the_guest() {
    let server = Server::start(&[]);
    let out = server.run_ok(&[
        "run",
        "npm --version >/dev/null && pip --version >/dev/null && python3 -m venv /tmp/v \
         && /tmp/v/bin/python -c 'print(6*7)' && test -d /jfs && command -v apk",
    ]);
    assert_eq!(out, "42\n/usr/local/bin/apk\n");

    // An Alpine name with no Debian package: refused by name, nothing run.
    let o = server.mags_output(&["run", "apk add jq no-such-pkg; echo rc=$?"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mags_e2e::stdout(&o), "rc=1\n");
    assert!(
        stderr(&o).contains("no Debian package for the Alpine package 'no-such-pkg'"),
        "{}",
        stderr(&o)
    );

    // Mapped names install from Debian's mirror; pip and npm from theirs.
    let out = server.run_ok(&[
        "run",
        "-w",
        "env-ws",
        "-p",
        "set -e; apk add --no-cache py3-six >/dev/null 2>&1; python3 -c 'import six; print(\"six\")'
         pip install -q tomli 2>/dev/null; python3 -c 'import tomli; print(\"tomli\")'
         mkdir -p /root/app && cd /root/app && echo '{\"dependencies\": {\"is-number\": \"7.0.0\"}}' > package.json
         npm install --no-audit --no-fund --loglevel=error >/dev/null
         node -e 'console.log(require(\"is-number\")(5))'
         echo kept > /jfs/note",
    ]);
    assert_eq!(out, "six\ntomli\ntrue\n");
    // /jfs travels with the persistent workspace.
    server.run_ok(&["stop", "env-ws"]);
    let out = server.run_ok(&[
        "run",
        "-w",
        "env-ws",
        "cat /jfs/note; ls /root/app/node_modules",
    ]);
    assert_eq!(out, "kept\nis-number\n");
}
