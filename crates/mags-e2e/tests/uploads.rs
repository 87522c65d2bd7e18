//! The public docs' upload examples on real VMs with the real CLI: a job
//! with uploaded files starts in `/uploads` (the files are also at
//! `/root/<name>`), so both `python3 script.py` and the docs' `cp *.js
//! *.json /root/ && cd /root` work as written; a job without files starts
//! in `/root` as before. Several files travel in one request.

use mags_e2e::Server;

#[test]
fn the_docs_upload_examples_run_as_written() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(
        path("script.py"),
        "import os\nprint('from script', os.getcwd())\n",
    )
    .expect("write");
    std::fs::write(path("config.json"), "{\"port\": 3000}\n").expect("write");
    std::fs::write(path("app.js"), "console.log('app')\n").expect("write");

    // Single file: `mags run -f script.py 'python3 script.py'`.
    let out = server.run_ok(&["run", "-f", &path("script.py"), "python3 script.py"]);
    assert_eq!(out, "from script /uploads\n");

    // With a workspace: copy into /root (GNU cp fails from /root itself:
    // "are the same file"), and the copies stay in the workspace.
    let out = server.run_ok(&[
        "run",
        "-w",
        "up-proj",
        "-f",
        &path("config.json"),
        "-f",
        &path("app.js"),
        "cp *.js *.json /root/ && cd /root && ls app.js config.json && cat config.json",
    ]);
    assert_eq!(out, "app.js\nconfig.json\n{\"port\": 3000}\n");
    let out = server.run_ok(&["run", "-w", "up-proj", "pwd; cat /root/app.js"]);
    assert_eq!(
        out, "/root\nconsole.log('app')\n",
        "no files: the script starts in /root"
    );
    // A later job's /uploads holds its own files only.
    let out = server.run_ok(&["run", "-w", "up-proj", "-f", &path("script.py"), "ls"]);
    assert_eq!(out, "script.py\n");
}
