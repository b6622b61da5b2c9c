//! A worker over TLS (`amqps://`): a private CA and a TLS terminator in front of the broker,
//! trusted through `SSL_CERT_FILE`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{warren, Names, WorkerProcess};
use serde_json::json;

/// A throwaway CA and a server certificate for `localhost`, in `dir`.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=warren-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// socat terminating TLS on a free port in front of RabbitMQ's plain port; killed on drop.
struct TlsTerminator(std::process::Child, u16);

impl TlsTerminator {
    fn start(dir: &Path) -> TlsTerminator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!(
            "openssl-listen:{port},reuseaddr,fork,bind=127.0.0.1,cert={},key={},verify=0",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let child = Command::new("socat")
            .args([listen.as_str(), "tcp:127.0.0.1:5672"])
            .spawn()
            .expect("socat (apt-get install socat)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsTerminator(child, port)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_serves_over_amqps_trusting_a_private_ca_from_ssl_cert_file() {
    let dir = std::env::temp_dir().join(format!("warren-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let tls = TlsTerminator::start(&dir);
    let url = format!("amqps://guest:guest@localhost:{}/%2f", tls.1);
    let ca = dir.join("ca.pem");
    let names = Names::new("tls");

    // Without the CA the certificate is not trusted: the connection must fail.
    let untrusted = warren(&names)
        .arg("topology")
        .env("WARREN__BROKER__URL", &url)
        .env("SSL_CERT_FILE", "/nonexistent-ca.pem")
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "an untrusted certificate was accepted"
    );

    let worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__BROKER__URL", url.as_str()),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    )
    .await;
    let mut upstream = crate::common::Caller::connect().await;
    let reply = upstream
        .request(
            &names.requests,
            &json!({"prompt": "Hello", "max_tokens": 3}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}\n{}", worker.log());
    assert!(
        worker.log().contains("amqps://guest:***@localhost"),
        "{}",
        worker.log()
    );
    drop(worker);
    std::fs::remove_dir_all(&dir).unwrap();
}
