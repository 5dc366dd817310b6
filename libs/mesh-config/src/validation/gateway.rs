//! Gateway: servers with their ports, hosts and TLS settings.

use std::collections::BTreeSet;

use super::{Checker, Path, hosts, ports, selectors};
use crate::networking::gateway::{Gateway, Port, Server, ServerTlsSettings, TlsMode, TlsProtocol};

pub const UNIX_PREFIX: &str = "unix://";

pub fn validate(v: &mut Checker, at: &Path, gw: &Gateway) {
    if gw.servers.is_empty() {
        v.error(&at.field("servers"), "a Gateway needs at least one server");
    }
    let mut port_names = BTreeSet::new();
    for (i, server) in gw.servers.iter().enumerate() {
        let at = at.field("servers").index(i);
        server_of(v, &at, server);
        if !server.port.name.is_empty() && !port_names.insert(server.port.name.as_str()) {
            v.error(
                &at.field("port").field("name"),
                format!("port name {:?} is used by another server", server.port.name),
            );
        }
        let http =
            ports::Protocol::parse(&server.port.protocol).is_some_and(ports::Protocol::is_http);
        if !http
            && server
                .tls
                .as_ref()
                .is_some_and(|t| t.https_redirect == Some(true))
        {
            v.warn(
                &at.field("tls").field("httpsRedirect"),
                "httpsRedirect only makes sense on HTTP servers",
            );
        }
    }
    if !gw.selector.is_empty() {
        selectors::labels(v, &at.field("selector"), &gw.selector);
    }
}

fn server_of(v: &mut Checker, at: &Path, s: &Server) {
    v.require(
        &at.field("hosts"),
        !s.hosts.is_empty(),
        "a server needs at least one host",
    );
    for (i, host) in s.hosts.iter().enumerate() {
        v.check(
            &at.field("hosts").index(i),
            hosts::namespace_slash_host(host, hosts::HostOwner::Gateway),
        );
    }
    let port_ok = port_of(v, &at.field("port"), &s.port, &s.bind);
    bind(v, &at.field("bind"), &s.bind, s.port.number);
    if let Some(tls) = &s.tls {
        tls_options(v, &at.field("tls"), tls);
    }
    if !port_ok {
        return;
    }
    let Some(protocol) = ports::Protocol::parse(&s.port.protocol) else {
        return;
    };
    match (&s.tls, protocol.is_tls()) {
        (None, true) => v.error(
            &at.field("tls"),
            format!("a {} server needs TLS settings", s.port.protocol),
        ),
        (Some(tls), false) if protocol.is_http() => {
            // Plain HTTP servers may only carry httpsRedirect.
            let passthrough = matches!(
                tls.mode.unwrap_or_default(),
                TlsMode::Passthrough | TlsMode::AutoPassthrough
            );
            let certs = !tls.ca_certificates.is_empty()
                || !tls.private_key.is_empty()
                || !tls.server_certificate.is_empty();
            if !passthrough || certs {
                v.error(
                    &at.field("tls"),
                    "a plain-text HTTP server cannot have TLS settings other than httpsRedirect",
                );
            }
        }
        (Some(_), false) => v.error(
            &at.field("tls"),
            format!("a {} server cannot have TLS settings", s.port.protocol),
        ),
        _ => {}
    }
}

/// Returns whether the port is usable for the protocol checks that follow.
fn port_of(v: &mut Checker, at: &Path, port: &Port, bind: &str) -> bool {
    let before = v.report.errors.len();
    v.require(
        &at.field("protocol"),
        ports::Protocol::parse(&port.protocol).is_some(),
        format!("unsupported protocol {:?}; use HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS or MYSQL", port.protocol),
    );
    if port.number > 0 || !bind.starts_with(UNIX_PREFIX) {
        v.check(&at.field("number"), ports::number(port.number));
    }
    if port.target_port.is_some_and(|p| p > 0) {
        v.error(
            &at.field("targetPort"),
            "targetPort has no effect on a Gateway",
        );
    }
    v.require(
        &at.field("name"),
        !port.name.is_empty(),
        "the port needs a name",
    );
    v.report.errors.len() == before
}

pub fn unix_address(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("unix socket path is empty".into());
    }
    if path.starts_with('@') {
        return Ok(()); // abstract socket
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!("{path:?} is not an absolute path to a socket file"));
    }
    Ok(())
}

fn bind(v: &mut Checker, at: &Path, bind: &str, number: u32) {
    if let Some(path) = bind.strip_prefix(UNIX_PREFIX) {
        v.check(at, unix_address(path));
        v.require(
            at,
            number == 0,
            "a server bound to a unix socket must use port number 0",
        );
    } else if !bind.is_empty() {
        v.check(at, hosts::ip_address(bind));
    }
}

/// Server-side TLS (also used by Sidecar ingress listeners).
pub fn tls_options(v: &mut Checker, at: &Path, tls: &ServerTlsSettings) {
    let mode = tls.mode.unwrap_or_default();
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && tls.cipher_suites.is_empty()
    {
        v.warn(
            &at.field("minProtocolVersion"),
            "TLS below 1.2 needs cipherSuites: the default suites do not support it",
        );
    }
    let mut ciphers = BTreeSet::new();
    for (i, cipher) in tls.cipher_suites.iter().enumerate() {
        if !ciphers.insert(cipher) {
            v.warn(
                &at.field("cipherSuites").index(i),
                format!("cipher suite {cipher:?} is listed twice"),
            );
        }
    }
    let has_files = !tls.server_certificate.is_empty()
        || !tls.private_key.is_empty()
        || !tls.ca_certificates.is_empty();
    let has_credentials = !tls.credential_name.is_empty()
        || !tls.credential_names.is_empty()
        || !tls.tls_certificates.is_empty();
    match mode {
        TlsMode::IstioMutual => {
            if has_files || has_credentials {
                v.error(at, "ISTIO_MUTUAL uses Istio's certificates: no certificates, keys or credentials may be given");
            }
            return;
        }
        TlsMode::Passthrough | TlsMode::AutoPassthrough
            if (has_files || has_credentials || !tls.ca_crl.is_empty()) =>
        {
            v.warn(
                at,
                format!("{mode:?} does not terminate TLS: its certificates are ignored"),
            );
        }
        _ => {}
    }
    let sources = usize::from(!tls.server_certificate.is_empty() && !tls.private_key.is_empty())
        + usize::from(!tls.credential_name.is_empty())
        + usize::from(!tls.credential_names.is_empty())
        + usize::from(!tls.tls_certificates.is_empty());
    if sources > 1 {
        v.error(at, "only one of credentialName, credentialNames, serverCertificate/privateKey or tlsCertificates may be set");
    }
    let terminating = matches!(
        mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    );
    if terminating && (!tls.credential_name.is_empty() || !tls.credential_names.is_empty()) {
        return; // the credential holds the certificates
    }
    if terminating {
        let mutual = mode != TlsMode::Simple;
        let label = if mutual { "MUTUAL" } else { "SIMPLE" };
        if mutual && tls.ca_certificates.is_empty() {
            v.error(
                &at.field("caCertificates"),
                format!("{label} TLS needs caCertificates (or credentialName) to verify clients"),
            );
        }
        if tls.tls_certificates.len() > 2 {
            v.warn(
                &at.field("tlsCertificates"),
                "at most 2 server certificates are used",
            );
        }
        if tls.tls_certificates.is_empty() {
            v.require(
                &at.field("serverCertificate"),
                !tls.server_certificate.is_empty(),
                format!("{label} TLS needs serverCertificate (or credentialName)"),
            );
            v.require(
                &at.field("privateKey"),
                !tls.private_key.is_empty(),
                format!("{label} TLS needs privateKey (or credentialName)"),
            );
        }
        for (i, cert) in tls.tls_certificates.iter().enumerate() {
            let at = at.field("tlsCertificates").index(i);
            v.require(
                &at.field("serverCertificate"),
                !cert.server_certificate.is_empty(),
                "a TLS certificate needs serverCertificate",
            );
            v.require(
                &at.field("privateKey"),
                !cert.private_key.is_empty(),
                "a TLS certificate needs privateKey",
            );
        }
    }
    if !tls.ca_crl.is_empty() {
        if !tls.credential_name.is_empty() {
            v.error(
                &at.field("caCrl"),
                "with credentialName the CRL must come from the credential",
            );
        }
        if mode == TlsMode::Simple {
            v.error(&at.field("caCrl"), "a CRL has no use with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn server(body: &str) -> String {
        doc(
            "networking.istio.io/v1",
            "Gateway",
            &format!("  servers:\n  - hosts: [a.example.com]\n{body}"),
        )
    }

    const HTTPS: &str = "    port: {number: 443, name: https, protocol: HTTPS}\n";

    #[test]
    fn needs_servers() {
        assert_one_error(
            &doc(
                "networking.istio.io/v1",
                "Gateway",
                "  selector: {istio: ingressgateway}\n",
            ),
            "spec.servers",
        );
    }

    #[test]
    fn ports_and_binds() {
        assert_one_error(
            &server("    port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n"),
            "spec.servers[0].port.targetPort",
        );
        assert_one_error(
            &server("    port: {number: 80, name: '', protocol: HTTP}\n"),
            "spec.servers[0].port.name",
        );
        assert_valid(&server(
            "    port: {number: 0, name: uds, protocol: HTTP}\n    bind: unix:///var/run/gw.sock\n",
        ));
        assert_one_error(
            &server(
                "    port: {number: 80, name: uds, protocol: HTTP}\n    bind: unix:///var/run/gw.sock\n",
            ),
            "spec.servers[0].bind",
        );
        assert_one_error(
            &server("    port: {number: 80, name: http, protocol: HTTP}\n    bind: localhost\n"),
            "spec.servers[0].bind",
        );
    }

    #[test]
    fn tls_presence_follows_the_protocol() {
        assert_one_error(
            &server(
                "    port: {number: 3306, name: mysql, protocol: MYSQL}\n    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
            "spec.servers[0].tls",
        );
        assert_one_error(
            &server(
                "    port: {number: 80, name: http, protocol: HTTP}\n    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
            "spec.servers[0].tls",
        );
        assert_valid(&server(&format!("{HTTPS}    tls: {{mode: PASSTHROUGH}}\n")));
        assert_warning(
            &server(
                "    port: {number: 443, name: tls, protocol: TLS}\n    tls: {httpsRedirect: true}\n",
            ),
            "spec.servers[0].tls.httpsRedirect",
        );
    }

    #[test]
    fn tls_certificate_sources() {
        let tls = |body: &str| server(&format!("{HTTPS}    tls:\n{body}"));
        assert_valid(&tls("      mode: MUTUAL\n      credentialName: cert\n"));
        assert_valid(&tls(
            "      mode: SIMPLE\n      tlsCertificates:\n      - {serverCertificate: /a.pem, privateKey: /a.key}\n",
        ));
        assert_one_error(
            &tls(
                "      mode: SIMPLE\n      tlsCertificates:\n      - {serverCertificate: /a.pem}\n",
            ),
            "spec.servers[0].tls.tlsCertificates[0].privateKey",
        );
        assert_one_error(
            &tls(
                "      mode: SIMPLE\n      serverCertificate: /a.pem\n      privateKey: /a.key\n      tlsCertificates:\n      - {serverCertificate: /b.pem, privateKey: /b.key}\n",
            ),
            "spec.servers[0].tls",
        );
        assert_one_error(
            &tls(
                "      mode: SIMPLE\n      serverCertificate: /a.pem\n      privateKey: /a.key\n      caCrl: /crl.pem\n",
            ),
            "spec.servers[0].tls.caCrl",
        );
        assert_warning(
            &tls("      mode: PASSTHROUGH\n      credentialName: ignored\n"),
            "spec.servers[0].tls",
        );
        assert_warning(
            &tls(
                "      mode: SIMPLE\n      credentialName: c\n      minProtocolVersion: TLSV1_1\n",
            ),
            "spec.servers[0].tls.minProtocolVersion",
        );
        assert_warning(
            &tls(
                "      mode: SIMPLE\n      credentialName: c\n      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256]\n",
            ),
            "spec.servers[0].tls.cipherSuites[1]",
        );
    }

    #[test]
    fn hosts_may_be_ips_and_namespaced() {
        let hosts = |h: &str| {
            doc(
                "networking.istio.io/v1",
                "Gateway",
                &format!(
                    "  servers:\n  - hosts: [{h}]\n    port: {{number: 80, name: http, protocol: HTTP}}\n"
                ),
            )
        };
        assert_valid(&hosts(
            "'./*.example.com', 'prod/api.example.com', '*', 10.1.2.3",
        ));
        assert_one_error(&hosts("'/api.example.com'"), "spec.servers[0].hosts[0]");
    }

    #[test]
    fn selector_labels() {
        assert_one_error(
            &doc(
                "networking.istio.io/v1",
                "Gateway",
                "  selector: {istio: 'ingress*'}\n  servers:\n  - hosts: ['*']\n    port: {number: 80, name: http, protocol: HTTP}\n",
            ),
            "spec.selector[istio]",
        );
    }
}
