//! Port numbers, port names and protocol names.

use super::names::is_dns_label;

pub fn number(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port {port} is not in 1..65535"))
    }
}

pub fn name(name: &str) -> Result<(), String> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(format!("port name {name:?} is not a DNS-1123 label"))
    }
}

/// The protocols Istio understands on ports, case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    Grpc,
    GrpcWeb,
    HttpProxy,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            "HTTP2" => Protocol::Http2,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "HTTP_PROXY" => Protocol::HttpProxy,
            "TCP" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "UDP" => Protocol::Udp,
            "MONGO" => Protocol::Mongo,
            "REDIS" => Protocol::Redis,
            "MYSQL" => Protocol::Mysql,
            _ => return None,
        })
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// A protocol name; empty is allowed where Istio detects the protocol.
pub fn protocol(name: &str) -> Result<(), String> {
    if name.is_empty() || Protocol::parse(name).is_some() {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol {name:?}; use HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL or UDP"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_protocols() {
        assert!(number(1).is_ok());
        assert!(number(65535).is_ok());
        assert!(number(0).is_err());
        assert!(number(65536).is_err());
        assert!(name("http-web").is_ok());
        assert!(name("http_web").is_err());
        assert!(protocol("grpc-web").is_ok());
        assert!(protocol("").is_ok());
        assert!(protocol("QUIC").is_err());
        assert!(Protocol::parse("https").unwrap().is_tls());
        assert!(Protocol::parse("GRPC").unwrap().is_http());
    }
}
