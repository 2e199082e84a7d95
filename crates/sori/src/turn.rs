//! The embedded TURN server, started as the configuration plans it.

use std::net::{IpAddr, SocketAddr};

use sori_signal::TurnAccess;
use sori_turn::{TurnConfig, TurnServer, TurnTls};

use crate::config::{Config, TurnPlan};

/// Starts the embedded TURN server when the configuration asks for it; returns it with the TURN
/// servers the session server hands out credentials for.
pub async fn start_turn(
    config: &Config,
    media: &[SocketAddr],
    web_certificate: Option<std::sync::Arc<crate::tls::CertStore>>,
) -> Result<(Option<TurnServer>, Option<TurnAccess>), String> {
    let (listen, secret, realm, relay_ports, allow, ttl, tls, limits) = match config.turn() {
        TurnPlan::Off => return Ok((None, None)),
        TurnPlan::External { urls, secret, ttl } => {
            tracing::info!("TURN: handing out {}", urls.join(", "));
            return Ok((None, Some(TurnAccess { urls, secret, ttl })));
        }
        TurnPlan::Embedded {
            listen,
            secret,
            realm,
            relay_ports,
            allow,
            ttl,
            tls,
            limits,
        } => (listen, secret, realm, relay_ports, allow, ttl, tls, limits),
    };
    // A certificate that does not load stops the start, naming the file.
    let tls_config = match &tls {
        Some(plan) => Some(TurnTls {
            listen: plan.listen,
            config: match (&plan.files, web_certificate) {
                (Some((cert, key)), _) => {
                    sori_turn::tls::load_pem(cert, key).map_err(|e| e.to_string())?
                }
                (None, Some(store)) => crate::tls::turn_config(store),
                (None, None) => {
                    return Err("TURN over TLS: no certificate (turn.tls_cert, or HTTPS)".into())
                }
            },
        }),
        None => None,
    };
    let secret = match secret {
        Some(s) => s,
        None => sori_turn::credentials::random_secret()
            .map_err(|_| "cannot draw a random TURN secret".to_string())?,
    };
    // Browsers reach TURN where they reach the media port: the advertised address.
    let Some(advertised) = media.first().map(|a| a.ip()) else {
        return Err("TURN needs the media server's advertised address (--advertise-ip)".into());
    };
    let server = TurnServer::start(TurnConfig {
        listen,
        // Relayed datagrams leave from the address peers send them to: the advertised one
        // when it is this host's, rather than whichever the route back picks.
        relay_bind: if config.media.bind_ip.is_unspecified()
            && sori_net::is_local_address(advertised)
        {
            advertised
        } else {
            config.media.bind_ip
        },
        relay_ip: advertised,
        relay_ports: relay_ports.clone(),
        secret: secret.clone(),
        realm,
        allow,
        own: media.to_vec(),
        tls: tls_config,
        limits,
    })
    .await
    .map_err(|e| e.to_string())?;
    let at = SocketAddr::new(advertised, server.local_addr().port());
    let mut urls = vec![
        format!("stun:{at}"),
        format!("turn:{at}?transport=udp"),
        format!("turn:{at}?transport=tcp"),
    ];
    if let (Some(tls_addr), Some(plan)) = (server.tls_addr(), &tls) {
        // Browsers check the certificate against this host: a name it is issued for, or the
        // advertised IP when the certificate is for that IP.
        let turns = match &plan.host {
            Some(host) => match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, tls_addr.port()).to_string(),
                Err(_) => format!("{host}:{}", tls_addr.port()),
            },
            None => SocketAddr::new(advertised, tls_addr.port()).to_string(),
        };
        urls.push(format!("turns:{turns}?transport=tcp"));
        tracing::info!("TURN on TLS {tls_addr} (advertised as turns:{turns})");
    }
    tracing::info!(
        "TURN on UDP+TCP {} (advertised as {at}, relay ports {}-{})",
        server.local_addr(),
        relay_ports.start(),
        relay_ports.end(),
    );
    Ok((Some(server), Some(TurnAccess { urls, secret, ttl })))
}
