//! Only current credentials signed with the server's secret get an allocation.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use sori_turn::{credentials, Credential};

/// Tries to allocate with `credential`; returns the error the client reports.
async fn refusal(credential: Credential) -> String {
    let server = server(&["127.0.0.0/8"]).await;
    let client = client(server.local_addr(), udp().await, &credential).await;
    let result = tokio::time::timeout(WAIT, client.allocate())
        .await
        .expect("the server answers");
    let error = match result {
        Ok(_) => panic!("allocation with {credential:?} succeeded"),
        Err(e) => e.to_string(),
    };
    client.close().await.unwrap();
    server.shutdown().await;
    error
}

#[tokio::test]
async fn an_expired_credential_is_refused() {
    let issued = SystemTime::now() - Duration::from_secs(3600);
    let expired = credentials::issue(SECRET, "p1", Duration::from_secs(60), issued);
    let e = refusal(expired).await;
    assert!(e.contains("error 400"), "{e}");
}

#[tokio::test]
async fn a_forged_password_is_refused() {
    let mut forged = credential("p1");
    forged.password = credentials::password("not-the-secret", &forged.username);
    let e = refusal(forged).await;
    assert!(e.contains("error 400"), "{e}");
}

#[tokio::test]
async fn a_username_without_expiry_is_refused() {
    let username = "p1".to_string();
    let password = credentials::password(SECRET, &username);
    let e = refusal(Credential { username, password }).await;
    assert!(e.contains("error 400"), "{e}");
}
