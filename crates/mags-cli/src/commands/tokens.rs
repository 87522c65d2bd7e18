//! `mags token list|create|revoke`: the caller's own API tokens.

use super::{connect, print_json};

/// `mags token list`.
pub async fn list(json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let list = client.list_tokens().await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    println!(
        "{:<36} {:<12} {:<24} {:<24} REVOKED",
        "ID", "PREFIX", "CREATED", "LAST USED"
    );
    for t in &list.tokens {
        println!(
            "{:<36} {:<12} {:<24} {:<24} {}",
            t.id,
            t.prefix,
            t.created_at,
            t.last_used_at.as_deref().unwrap_or("never"),
            if t.revoked { "yes" } else { "no" }
        );
    }
    Ok(0)
}

/// `mags token create`: prints the new token (only now; it is stored hashed).
pub async fn create(json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let t = client.create_token().await?;
    if json {
        print_json(&t)?;
    } else {
        println!("{}", t.token);
        eprintln!("token {} created; it is shown only once", t.prefix);
    }
    Ok(0)
}

/// `mags token revoke ID_OR_PREFIX`.
pub async fn revoke(id: &str, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let r = client.revoke_token(id).await?;
    if json {
        print_json(&r)?;
    } else {
        println!("{}", r.message);
    }
    Ok(0)
}
