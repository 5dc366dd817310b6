//! Local addresses to connect from. One address has ~28k ephemeral ports
//! (Linux's default 32768-60999), so past that the load tool spreads its
//! connections over several loopback addresses (all of 127.0.0.0/8 is local).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// A list of source addresses, written `127.0.0.2-127.0.0.9` (an IPv4
/// range), `127.0.0.2,127.0.0.3` or a single address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

impl SourceIps {
    /// The address for connection `index`, round-robin.
    pub fn for_index(&self, index: usize) -> Option<IpAddr> {
        (!self.0.is_empty()).then(|| self.0[index % self.0.len()])
    }
}

impl FromStr for SourceIps {
    type Err = String;

    fn from_str(s: &str) -> Result<SourceIps, String> {
        let mut ips = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((first, last)) => ips.extend(ipv4_range(first.trim(), last.trim())?),
                None => ips.push(
                    part.parse::<IpAddr>()
                        .map_err(|e| format!("{part:?} is not an IP address: {e}"))?,
                ),
            }
        }
        if ips.is_empty() {
            return Err("no source address given".into());
        }
        Ok(SourceIps(ips))
    }
}

fn ipv4_range(first: &str, last: &str) -> Result<Vec<IpAddr>, String> {
    let parse = |s: &str| {
        s.parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|e| format!("{s:?} is not an IPv4 address: {e}"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(format!(
            "range {}-{} runs backwards",
            Ipv4Addr::from(first),
            Ipv4Addr::from(last)
        ));
    }
    if last - first >= 65536 {
        return Err("a source range is limited to 65536 addresses".into());
    }
    Ok((first..=last)
        .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
        .collect())
}

/// Connects to `server`, from `source` when given (port 0: the kernel picks
/// a free port of that address), with Nagle off as Envoy's gRPC client does.
pub async fn connect_from(
    source: Option<IpAddr>,
    server: SocketAddr,
) -> io::Result<TokioIo<TcpStream>> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    Ok(TokioIo::new(socket.connect(server).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_single_addresses_parse() {
        let range: SourceIps = "127.0.0.2-127.0.0.4".parse().unwrap();
        assert_eq!(
            range.0,
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(|s| s.parse::<IpAddr>().unwrap())
        );
        let across_octets: SourceIps = "127.0.0.255-127.0.1.1".parse().unwrap();
        assert_eq!(across_octets.0.len(), 3);
        let list: SourceIps = "127.0.0.2, 127.0.0.9-127.0.0.10".parse().unwrap();
        assert_eq!(list.0.len(), 3);
        assert_eq!(list.for_index(4), Some("127.0.0.9".parse().unwrap()));
        let single: SourceIps = "::1".parse().unwrap();
        assert_eq!(single.0, ["::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!("127.0.0.9-127.0.0.2".parse::<SourceIps>().is_err());
        assert!("127.0.0.1-nope".parse::<SourceIps>().is_err());
        assert!("".parse::<SourceIps>().is_err());
        assert!("10.0.0.0-10.2.0.0".parse::<SourceIps>().is_err());
    }

    #[tokio::test]
    async fn connections_come_from_the_chosen_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let (client, accepted) =
            tokio::join!(connect_from(Some(source), server), listener.accept());
        client.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), source);
    }
}
