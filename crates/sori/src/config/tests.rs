use super::*;

#[test]
fn built_in_defaults() {
    let c = Config::load(None, toml::Table::new()).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.media.rtc_port, 40000);
    assert_eq!(
        c.tcp().unwrap().port,
        None,
        "ICE-TCP on the rtc port's number"
    );
    assert!(c.media.advertise_ip.is_empty());
    assert_eq!(c.server.room_mode, RoomModeName::Sfu);
    assert!(c.server.ice_servers.is_empty());
    assert_eq!(
        c.turn(),
        TurnPlan::Embedded {
            listen: "0.0.0.0:3478".parse().unwrap(),
            secret: None,
            realm: "sori".into(),
            relay_ports: 49152..=65535,
            allow: Vec::new(),
            ttl: Duration::from_secs(7200),
            tls: None,
            limits: AllocationLimits::default(),
        }
    );
    assert_eq!(c.turn.tls_listen, "0.0.0.0:5349".parse().unwrap());
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.kurento.listen, "127.0.0.1:8888".parse().unwrap());
    assert_eq!(c.kurento().path, "/kurento");
    assert_eq!(c.kurento().access_token, None);
    assert!(c.kurento().allowed_origins.is_empty());
    let k = c.kurento();
    let d = KurentoConfig::default();
    assert_eq!(
        (k.max_objects_per_session, k.max_recorders_per_session),
        (d.max_objects_per_session, d.max_recorders_per_session)
    );
    assert_eq!(c.signal().recording_starts_per_hour, 20);
    assert_eq!(c.signal().recordings_quota, Some(10 << 30));
    assert_eq!(
        c.sfu().video_codecs,
        vec![VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264]
    );
}

/// Loads `text` as a configuration file (written to a file of its own, as `--config` reads).
fn load_file(name: &str, text: &str) -> Result<Config, String> {
    let dir = std::env::temp_dir().join(format!("sori-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let loaded = Config::load(Some(&path), toml::Table::new()).map_err(|e| e.to_string());
    std::fs::remove_file(&path).unwrap();
    if let Err(e) = &loaded {
        assert!(
            e.starts_with(&path.display().to_string()),
            "names the file: {e}"
        );
    }
    loaded
}

#[test]
fn the_sample_configuration_parses_with_every_key_known() {
    // Parsed alone, not over the defaults: every key of Config is in the sample and every key
    // of the sample is one of Config's.
    let c: Config = toml::from_str(DEFAULT_TOML).unwrap();
    assert_eq!(c.media.rtc_port, 40000);
}

#[test]
fn a_file_overrides_only_what_it_names() {
    let c = load_file(
        "good",
        "[media]\nrtc_port = 5000\nadvertise_ip = \"192.0.2.7\"\n",
    )
    .unwrap();
    assert_eq!(c.media.rtc_port, 5000);
    assert_eq!(
        c.media.advertise_ip,
        ["192.0.2.7".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(c.media.ice_timeout, Duration::from_secs(15));
    assert!(c.tcp().is_some());

    let tcp = |text| load_file("tcp", text).map(|c| c.tcp());
    assert_eq!(
        tcp("[media]\ntcp_port = 443\n").unwrap().unwrap().port,
        Some(443)
    );
    assert!(tcp("[media]\ntcp = false\n").unwrap().is_none());
    let e = tcp("[media]\ntcp = \"no\"\n").unwrap_err();
    assert!(e.contains("media.tcp"), "{e}");
}

#[test]
fn the_command_line_overrides_the_file() {
    let settings: toml::Table = "[media]\nrtc_port = 6000\n[auth]\ndev = true\n"
        .parse()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("sori-config-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("file.toml");
    std::fs::write(&path, "[media]\nrtc_port = 5000\nbind_ip = \"127.0.0.1\"\n").unwrap();
    let c = Config::load(Some(&path), settings).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.media.rtc_port, 6000, "the command line wins");
    assert_eq!(
        c.media.bind_ip,
        IpAddr::from([127, 0, 0, 1]),
        "the file's stays"
    );
    assert!(c.auth.dev);
}

#[test]
fn malformed_settings_are_named() {
    for (text, message) in [
        ("[media]\nrtc_prot = 5000\n", "rtc_prot"),
        (
            "[media]\nvideo_codecs = [\"av2\"]\n",
            "unknown codec \"av2\"",
        ),
        ("[media]\nvideo_codecs = []\n", "media.video_codecs"),
        ("[turn]\nrelay_ports = \"9-2\"\n", "turn.relay_ports"),
        ("[turn]\nallow = [\"10.0.0.0/40\"]\n", "turn.allow"),
        ("[recording]\nquota_gib = -1.0\n", "recording.quota_gib"),
        ("[kurento]\npath = \"kurento\"\n", "kurento.path"),
        ("[auth.keys]\nk = \"short\"\n", "auth.keys: the secret of k"),
    ] {
        let e = load_file("malformed", text).unwrap_err();
        assert!(e.contains(message), "{text}: {e}");
    }
}

#[test]
fn inconsistent_turn_settings_are_clear_errors() {
    for (text, message) in [
        (
            "[turn]\nexternal = [\"turn:t.example.org\"]\n",
            "needs turn.secret",
        ),
        (
            "[turn]\nexternal = [\"http://x\"]\nsecret = \"s\"\n",
            "not a stun:",
        ),
        ("[turn]\ncredential_ttl_secs = 5\n", "at least 60"),
        (
            "[turn]\ntls_cert = \"/etc/sori/cert.pem\"\n",
            "turn.tls_cert is set but turn.tls_key is not",
        ),
        (
            "[turn]\ntls_key = \"/etc/sori/key.pem\"\n",
            "turn.tls_key is set but turn.tls_cert is not",
        ),
        (
            "[turn]\ntls_host = \"turn.example.org\"\n",
            "turn.tls_host is set but",
        ),
        (
            "[turn]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_host = \"a b\"\n",
            "turn.tls_host",
        ),
        (
            "[turn]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_listen = \"0.0.0.0:3478\"\n",
            "turn.tls_listen",
        ),
    ] {
        let e = load_file("turn", text).unwrap_err();
        assert!(e.contains(message), "{text}: {e}");
    }
}

#[test]
fn turn_plans_follow_the_file() {
    let caps = "[turn]\nallocations_per_username = 3\nallocations_per_ip = 0\n";
    let TurnPlan::Embedded { limits, .. } = load_file("caps", caps).unwrap().turn() else {
        panic!("the embedded server is planned");
    };
    assert_eq!(
        limits,
        AllocationLimits {
            per_username: 3,
            per_ip: 0
        }
    );
    let tls = "[turn]\ntls_cert = \"/etc/sori/cert.pem\"\ntls_key = \"/etc/sori/key.pem\"\n\
               tls_host = \"turn.example.org\"\n";
    let TurnPlan::Embedded {
        tls: Some(plan), ..
    } = load_file("tls", tls).unwrap().turn()
    else {
        panic!("TLS is planned");
    };
    assert_eq!(
        plan,
        TlsPlan {
            listen: "0.0.0.0:5349".parse().unwrap(),
            files: Some(("/etc/sori/cert.pem".into(), "/etc/sori/key.pem".into())),
            host: Some("turn.example.org".into()),
        }
    );
    // A host alone: the web listener's certificate, when there is one.
    let web = "[tls]\ndomain = \"meet.example.org\"\n[turn]\ntls_host = \"meet.example.org\"\n";
    let TurnPlan::Embedded {
        tls: Some(plan), ..
    } = load_file("web", web).unwrap().turn()
    else {
        panic!("TLS is planned");
    };
    assert_eq!(plan.files, None);
    let e = load_file("nocert", "[turn]\ntls_host = \"meet.example.org\"\n").unwrap_err();
    assert!(e.contains("turn.tls_host is set"), "{e}");
    let external = "[turn]\nsecret = \"s\"\nexternal = [\"turn:t.example.org:3478\"]\n";
    assert!(matches!(
        load_file("external", external).unwrap().turn(),
        TurnPlan::External { .. }
    ));
    let off = "[turn]\nenabled = false\n";
    assert_eq!(load_file("off", off).unwrap().turn(), TurnPlan::Off);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let missing = std::env::temp_dir().join("sori-config-test-missing.toml");
    let e = Config::load(Some(&missing), toml::Table::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn https_comes_from_files_or_from_acme_never_both() {
    let files = "[tls]\ncert = \"/etc/sori/c.pem\"\nkey = \"/etc/sori/k.pem\"\n";
    assert_eq!(
        load_file("files", files).unwrap().web_tls(),
        TlsPlanWeb::Files {
            cert: "/etc/sori/c.pem".into(),
            key: "/etc/sori/k.pem".into()
        }
    );
    let acme = "[tls]\ndomain = \"Meet.Example.org\"\nacme_email = \"ops@example.org\"\n";
    let TlsPlanWeb::Acme(plan) = load_file("acme", acme).unwrap().web_tls() else {
        panic!("ACME is planned");
    };
    assert_eq!(plan.domain, "meet.example.org");
    assert_eq!(
        plan.directory,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(plan.cache, std::path::PathBuf::from("acme"));
    assert_eq!(load_file("none", "").unwrap().web_tls(), TlsPlanWeb::Off);
    for (name, text, says) in [
        ("half", "[tls]\ncert = \"c.pem\"\n", "tls.key"),
        (
            "both",
            "[tls]\ncert = \"c\"\nkey = \"k\"\ndomain = \"a.example.org\"\n",
            "not both",
        ),
        ("ip", "[tls]\ndomain = \"192.0.2.1\"\n", "not a DNS name"),
        ("bad", "[tls]\ndomain = \"a..example\"\n", "not a DNS name"),
        (
            "http",
            "[tls]\ndomain = \"a.example.org\"\nacme_directory = \"http://ca\"\n",
            "https://",
        ),
        (
            "redirect",
            "[tls]\nhttp_listen = \"0.0.0.0:80\"\n",
            "HTTPS is off",
        ),
    ] {
        let e = load_file(name, text).unwrap_err();
        assert!(e.contains(says), "{name}: {e}");
    }
}
