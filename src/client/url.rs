//! Broker URLs: `tcp://HOST:PORT` (one broker), and ActiveMQ's
//! `failover:(tcp://h1:7670,tcp://h2:7671)?initialReconnectDelay=10&…` (a list to connect
//! to and reconnect to by itself, with [`FailoverOptions`]). Parsing only; no I/O.

use std::time::Duration;

use super::ClientError;

/// How a failover connection finds a broker again. ActiveMQ's option names and defaults,
/// except `randomize`: false here (ActiveMQ: true), so that a master/slave pair listed
/// master first is tried in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct FailoverOptions {
    /// `initialReconnectDelay` (ms, 10): the wait after the first failed round of the list.
    pub initial_reconnect_delay: Duration,
    /// `maxReconnectDelay` (ms, 30000): the longest wait between rounds.
    pub max_reconnect_delay: Duration,
    /// `useExponentialBackOff` (true): each wait is `backOffMultiplier` times the last.
    pub use_exponential_back_off: bool,
    /// `backOffMultiplier` (2.0).
    pub back_off_multiplier: f64,
    /// `maxReconnectAttempts` (-1: forever): rounds of the list after a connection is lost
    /// before giving up.
    pub max_reconnect_attempts: i64,
    /// `startupMaxReconnectAttempts` (-1: forever): rounds before the first connection.
    pub startup_max_reconnect_attempts: i64,
    /// `randomize` (false): try the list in a random order.
    pub randomize: bool,
    /// `timeout` (ms, -1: none): how long a send waits while disconnected before it fails.
    pub timeout: Option<Duration>,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            initial_reconnect_delay: Duration::from_millis(10),
            max_reconnect_delay: Duration::from_millis(30_000),
            use_exponential_back_off: true,
            back_off_multiplier: 2.0,
            max_reconnect_attempts: -1,
            startup_max_reconnect_attempts: -1,
            randomize: false,
            timeout: None,
        }
    }
}

impl FailoverOptions {
    /// The wait before round `round` (1 after the first failed round).
    pub fn delay(&self, round: u32) -> Duration {
        if !self.use_exponential_back_off {
            return self.initial_reconnect_delay;
        }
        let factor = self
            .back_off_multiplier
            .powi(round.saturating_sub(1) as i32);
        self.initial_reconnect_delay
            .mul_f64(factor.min(1e9))
            .min(self.max_reconnect_delay)
    }
}

/// Where a client connects.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerUrl {
    /// `host:port` of each broker, in order.
    pub addrs: Vec<String>,
    /// `Some` for a `failover:` URL.
    pub failover: Option<FailoverOptions>,
}

const SCHEMES: &str = "tcp://HOST:PORT, HOST:PORT, or failover:(tcp://HOST:PORT,…)?OPTIONS";

fn invalid(url: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::InvalidUrl(format!("`{url}`: {reason} (expected {SCHEMES})"))
}

/// `tcp://host:port` (or `host:port`) → `host:port`.
fn tcp(url: &str, whole: &str) -> Result<String, ClientError> {
    let addr = url.strip_prefix("tcp://").unwrap_or(url);
    if let Some((scheme, _)) = addr.split_once("://") {
        return Err(invalid(whole, format!("unknown scheme `{scheme}://`")));
    }
    if addr.contains('@') {
        return Err(invalid(
            whole,
            "a login in the URL (USER:PASSWORD@): the native protocol has none; give HOST:PORT",
        ));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_string())
        }
        _ => Err(invalid(whole, format!("`{url}` is not HOST:PORT"))),
    }
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, ClientError> {
        let url = url.trim();
        let Some(rest) = url.strip_prefix("failover:") else {
            return Ok(BrokerUrl {
                addrs: vec![tcp(url, url)?],
                failover: None,
            });
        };
        // `failover:(a,b)?opts`, or ActiveMQ's short form `failover:a,b?opts`.
        let (list, query) = match rest.strip_prefix('(') {
            Some(inner) => {
                let (list, after) = inner
                    .split_once(')')
                    .ok_or_else(|| invalid(url, "no `)` closes the list"))?;
                let query = match after {
                    "" => "",
                    _ => after
                        .strip_prefix('?')
                        .ok_or_else(|| invalid(url, format!("`{after}` after the list")))?,
                };
                (list, query)
            }
            None => rest.split_once('?').unwrap_or((rest, "")),
        };
        let addrs = list
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| tcp(part, url))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(invalid(url, "the list names no broker"));
        }
        let mut options = FailoverOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(url, format!("option `{pair}` has no value")))?;
            set_option(&mut options, name, value).map_err(|reason| invalid(url, reason))?;
        }
        Ok(BrokerUrl {
            addrs,
            failover: Some(options),
        })
    }
}

fn set_option(options: &mut FailoverOptions, name: &str, value: &str) -> Result<(), String> {
    let number = || -> Result<i64, String> {
        value
            .parse()
            .map_err(|_| format!("option {name}: `{value}` is not a whole number"))
    };
    let millis = || -> Result<Duration, String> {
        let n = number()?;
        u64::try_from(n)
            .map(Duration::from_millis)
            .map_err(|_| format!("option {name}: `{value}` is negative"))
    };
    let flag = || -> Result<bool, String> {
        value
            .parse()
            .map_err(|_| format!("option {name}: `{value}` is not true or false"))
    };
    match name {
        "initialReconnectDelay" => options.initial_reconnect_delay = millis()?,
        "maxReconnectDelay" => options.max_reconnect_delay = millis()?,
        "useExponentialBackOff" => options.use_exponential_back_off = flag()?,
        "backOffMultiplier" => {
            options.back_off_multiplier = value
                .parse()
                .ok()
                .filter(|m: &f64| *m >= 1.0)
                .ok_or_else(|| format!("option {name}: `{value}` is not a number ≥ 1"))?
        }
        "maxReconnectAttempts" => options.max_reconnect_attempts = number()?,
        "startupMaxReconnectAttempts" => options.startup_max_reconnect_attempts = number()?,
        "randomize" => options.randomize = flag()?,
        "timeout" => {
            options.timeout = match number()? {
                n if n < 0 => None,
                n => Some(Duration::from_millis(n as u64)),
            }
        }
        other => {
            return Err(format!(
                "unknown option `{other}` (known: initialReconnectDelay, maxReconnectDelay, \
                 useExponentialBackOff, backOffMultiplier, maxReconnectAttempts, \
                 startupMaxReconnectAttempts, randomize, timeout)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls() {
        let url = BrokerUrl::parse("tcp://127.0.0.1:7670").unwrap();
        assert_eq!(url.addrs, ["127.0.0.1:7670"]);
        assert!(url.failover.is_none());
        assert_eq!(
            BrokerUrl::parse("localhost:1").unwrap().addrs,
            ["localhost:1"]
        );
        assert!(BrokerUrl::parse("tcp://nowhere").is_err());
        assert!(BrokerUrl::parse("tcp://:80").is_err());
        let err = BrokerUrl::parse("stomp://h:1").unwrap_err().to_string();
        assert!(err.contains("unknown scheme `stomp://`"), "{err}");
        let err = BrokerUrl::parse("tcp://user:pw@h:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a login in the URL"), "{err}");
    }

    #[test]
    fn failover_urls_with_every_option() {
        let url = BrokerUrl::parse(
            "failover:(tcp://h1:7670,tcp://h2:7671)?initialReconnectDelay=20&maxReconnectDelay=500\
             &useExponentialBackOff=false&backOffMultiplier=3&maxReconnectAttempts=5\
             &startupMaxReconnectAttempts=2&randomize=true&timeout=3000",
        )
        .unwrap();
        assert_eq!(url.addrs, ["h1:7670", "h2:7671"]);
        let options = url.failover.unwrap();
        assert_eq!(options.initial_reconnect_delay, Duration::from_millis(20));
        assert_eq!(options.max_reconnect_delay, Duration::from_millis(500));
        assert!(!options.use_exponential_back_off);
        assert_eq!(options.back_off_multiplier, 3.0);
        assert_eq!(options.max_reconnect_attempts, 5);
        assert_eq!(options.startup_max_reconnect_attempts, 2);
        assert!(options.randomize);
        assert_eq!(options.timeout, Some(Duration::from_secs(3)));
        let short = BrokerUrl::parse("failover:h1:1,h2:2").unwrap();
        assert_eq!(short.addrs, ["h1:1", "h2:2"]);
        assert_eq!(short.failover, Some(FailoverOptions::default()));
    }

    #[test]
    fn bad_failover_urls_name_the_problem() {
        for (url, says) in [
            ("failover:(", "no `)`"),
            ("failover:()", "names no broker"),
            ("failover:(tcp://h:1)?bogus=1", "unknown option `bogus`"),
            (
                "failover:(tcp://h:1)?timeout=soon",
                "`soon` is not a whole number",
            ),
            ("failover:(tcp://h:1)?randomize=maybe", "not true or false"),
            ("failover:(tcp://h:1)?timeout", "has no value"),
            ("failover:(tcp://h:1)x", "`x` after the list"),
            ("failover:(tcp://h)", "`tcp://h` is not HOST:PORT"),
        ] {
            let err = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn back_off_grows_to_its_limit() {
        let options = FailoverOptions::default();
        assert_eq!(options.delay(1), Duration::from_millis(10));
        assert_eq!(options.delay(2), Duration::from_millis(20));
        assert_eq!(options.delay(40), Duration::from_millis(30_000));
    }
}
