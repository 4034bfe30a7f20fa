//! The public address of a `LoadBalancer` Service, for `--advertise-service`: a registrar or
//! media replica behind such a Service writes the address the cloud gave its load balancer into
//! SIP and SDP, though that address is only known once the cloud has provisioned it.
//!
//! [`wait_for_address`] reads the Service (`get`, so the pod's service account needs `get` on
//! `services` in its namespace) until `status.loadBalancer.ingress[0]` has an `ip` or a
//! `hostname`, backing off from 1 s to 5 s between reads. There is no time limit: until the
//! address is known the replica serves nothing, so its pod stays unready. The wait is logged
//! when it starts and then at most every 30 s. [`wait_for_ip`] goes on to resolve a hostname
//! (an AWS NLB has a DNS name, no IP) to an address, retrying while the name does not resolve.
//!
//! What waiting cannot fix ends the wait with an [`Error`] naming the fix: no such Service, a
//! Service that is not of type `LoadBalancer`, a service account not allowed to read it. Other
//! failures (the API server unreachable or overloaded) are retried.

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The first pause between two reads of the Service; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between two reads of the Service (or two DNS lookups).
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How often a wait that goes on is logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What the cloud gave the load balancer: `ingress[0].ip`, else `ingress[0].hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An IP address (most clouds).
    Ip(IpAddr),
    /// A DNS name (AWS load balancers).
    Hostname(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Hostname(name) => f.write_str(name),
        }
    }
}

/// Why the address of a Service cannot be had by waiting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name cannot name a Service.
    #[error(
        "{name:?} is not a Service name: use at most 63 lowercase letters, digits and '-', \
         starting with a letter (e.g. --advertise-service kubepbx-sip)"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// There is no such Service.
    #[error(
        "there is no Service {name} in namespace {namespace}: check the Service name given to \
         --advertise-service (the chart's values) and that the pod runs in the Service's \
         namespace (POD_NAMESPACE)"
    )]
    NotFound {
        /// The namespace looked in.
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// The Service gets no load balancer.
    #[error(
        "Service {namespace}/{name} is of type {kind}, not LoadBalancer, so it gets no public \
         address: make it type LoadBalancer, or give the address with --advertise instead of \
         --advertise-service"
    )]
    NotLoadBalancer {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// Its `spec.type`.
        kind: String,
    },
    /// The service account may not read the Service.
    #[error(
        "not allowed to read Service {namespace}/{name} ({message}): the pod's service account \
         needs the `get` permission on `services` in namespace {namespace} (a Role and a \
         RoleBinding)"
    )]
    Forbidden {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// What the API server said.
        message: String,
    },
}

/// Rejects a name that cannot name a Service (an RFC 1035 label), before any request.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// The pod's own namespace: `POD_NAMESPACE` (the downward API), else the client's default (the
/// service account's namespace in a pod, the kubeconfig context's outside).
pub fn own_namespace(client: &Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

/// Waits until the load balancer of Service `namespace/name` has an address and returns it.
pub async fn wait_for_address(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Address, Error> {
    check_name(name)?;
    let api: Api<Service> = Api::namespaced(client, namespace);
    let service = format!("{namespace}/{name}");
    let mut progress = Progress::new();
    let mut pause = FIRST_RETRY;
    loop {
        match api.get(name).await {
            Ok(found) => {
                if let Some(address) = address_of(&found, namespace, name)? {
                    tracing::info!(
                        address = %address,
                        waited_seconds = progress.elapsed(),
                        "the load balancer of Service {service} has its address"
                    );
                    return Ok(address);
                }
                if let Some(waited) = progress.due() {
                    tracing::info!(
                        waited_seconds = waited,
                        "waiting for the load balancer of Service {service} to get an address \
                         (`kubectl describe service -n {namespace} {name}` shows the cloud's \
                         events); nothing is served until then"
                    );
                }
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                return Err(Error::NotFound {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Err(Error::Forbidden {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    message: status.message,
                });
            }
            Err(e) => {
                if let Some(waited) = progress.due() {
                    tracing::warn!(
                        error = %e,
                        waited_seconds = waited,
                        "reading Service {service} failed; retrying"
                    );
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// Like [`wait_for_address`], and then resolves a hostname with `resolve` (normally
/// [`lookup`]) to its first IPv4 address (its first IPv6 address when it has no IPv4 one),
/// retrying while it resolves to nothing.
pub async fn wait_for_ip(
    client: Client,
    namespace: &str,
    name: &str,
    resolve: impl AsyncFn(&str) -> std::io::Result<Vec<IpAddr>>,
) -> Result<IpAddr, Error> {
    let host = match wait_for_address(client, namespace, name).await? {
        Address::Ip(ip) => return Ok(ip),
        Address::Hostname(host) => host,
    };
    let mut progress = Progress::new();
    let mut pause = FIRST_RETRY;
    loop {
        let resolved = resolve(&host).await;
        if let Some(ip) = resolved.as_deref().ok().and_then(first_address) {
            tracing::info!(hostname = %host, address = %ip, "resolved the load balancer's name");
            return Ok(ip);
        }
        if let Some(waited) = progress.due() {
            let error = match resolved {
                Ok(_) => "no address".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::info!(
                hostname = %host,
                error = %error,
                waited_seconds = waited,
                "the name of the load balancer of Service {namespace}/{name} does not resolve \
                 yet (new load balancers take a few minutes to appear in DNS); retrying"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// The addresses of `host` from the system's resolver.
pub async fn lookup(host: &str) -> std::io::Result<Vec<IpAddr>> {
    Ok(tokio::net::lookup_host((host, 0))
        .await?
        .map(|a| a.ip())
        .collect())
}

/// The first IPv4 address, else the first one.
fn first_address(addresses: &[IpAddr]) -> Option<IpAddr> {
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

/// The address of a Service's load balancer, `None` while it has none; an error when the
/// Service is not of type `LoadBalancer`.
fn address_of(service: &Service, namespace: &str, name: &str) -> Result<Option<Address>, Error> {
    let kind = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if kind != "LoadBalancer" {
        return Err(Error::NotLoadBalancer {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let Some(ingress) = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
    else {
        return Ok(None);
    };
    let ip = ingress.ip.as_deref().filter(|ip| !ip.is_empty());
    let hostname = ingress.hostname.as_deref().filter(|h| !h.is_empty());
    Ok(match (ip, hostname) {
        (Some(ip), _) => Some(match ip.parse() {
            Ok(ip) => Address::Ip(ip),
            Err(_) => Address::Hostname(ip.to_owned()),
        }),
        (None, Some(hostname)) => Some(Address::Hostname(hostname.to_owned())),
        (None, None) => None,
    })
}

/// When a wait is worth a log line: at its first step, then every [`REPORT_EVERY`].
#[derive(Debug)]
struct Progress {
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            last: None,
        }
    }

    /// How long the wait has lasted, in whole seconds.
    fn elapsed(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// `Some(seconds waited)` when a line is due now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < REPORT_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(self.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    const NS: &str = "office";
    const NAME: &str = "kubepbx-media-0";
    /// For the next request (in paused time: the backoff passes at once).
    const STEP: Duration = Duration::from_secs(60);

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    /// Answers the next request, which must read the Service.
    async fn answer(handle: &mut Handle, status: StatusCode, body: &Value) {
        let (request, reply) = tokio::time::timeout(STEP, handle.next_request())
            .await
            .expect("the Service is read")
            .expect("the client is gone");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/{NS}/services/{NAME}")
        );
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        reply.send_response(response);
    }

    fn service(kind: &str, ingress: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"type": kind, "ports": [{"port": 5060, "protocol": "UDP"}]},
            "status": {"loadBalancer": ingress},
        })
    }

    fn failure(code: u16, reason: &str, message: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "code": code, "reason": reason, "message": message,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_load_balancer_has_an_ip() {
        let (client, mut handle) = mock();
        let server = async {
            answer(
                &mut handle,
                StatusCode::OK,
                &service("LoadBalancer", json!({})),
            )
            .await;
            let error = failure(500, "InternalError", "etcdserver: leader changed");
            answer(&mut handle, StatusCode::INTERNAL_SERVER_ERROR, &error).await;
            let pending = service("LoadBalancer", json!({"ingress": []}));
            answer(&mut handle, StatusCode::OK, &pending).await;
            let ready = service("LoadBalancer", json!({"ingress": [{"ip": "203.0.113.7"}]}));
            answer(&mut handle, StatusCode::OK, &ready).await;
        };
        let started = Instant::now();
        let (found, ()) = tokio::join!(wait_for_address(client, NS, NAME), server);
        assert_eq!(found.unwrap(), Address::Ip("203.0.113.7".parse().unwrap()));
        // Three pauses of 1, 2 and 4 s: a backoff, not a busy loop.
        assert_eq!(started.elapsed().as_secs(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostname_is_resolved_to_its_first_ipv4_address_once_it_resolves() {
        let (client, mut handle) = mock();
        let nlb = "k8s-office-media0-1234.elb.eu-west-1.amazonaws.com";
        let server = async {
            let ready = service("LoadBalancer", json!({"ingress": [{"hostname": nlb}]}));
            answer(&mut handle, StatusCode::OK, &ready).await;
        };
        let asked = std::cell::RefCell::new(Vec::new());
        let resolve = async |host: &str| {
            asked.borrow_mut().push(host.to_owned());
            match asked.borrow().len() {
                1 => Err(std::io::Error::other("no such host")),
                2 => Ok(Vec::new()),
                _ => Ok(vec![
                    "2001:db8::7".parse().unwrap(),
                    "203.0.113.8".parse().unwrap(),
                    "203.0.113.9".parse().unwrap(),
                ]),
            }
        };
        let (found, ()) = tokio::join!(wait_for_ip(client, NS, NAME, resolve), server);
        assert_eq!(found.unwrap(), "203.0.113.8".parse::<IpAddr>().unwrap());
        assert_eq!(asked.into_inner(), [nlb, nlb, nlb]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostname_is_the_address_as_is() {
        let (client, mut handle) = mock();
        let server = async {
            let ready = service(
                "LoadBalancer",
                json!({"ingress": [{"hostname": "sip.example.com"}, {"ip": "203.0.113.7"}]}),
            );
            answer(&mut handle, StatusCode::OK, &ready).await;
        };
        let (found, ()) = tokio::join!(wait_for_address(client, NS, NAME), server);
        assert_eq!(
            found.unwrap(),
            Address::Hostname("sip.example.com".to_owned())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_service_is_an_error_naming_it() {
        let (client, mut handle) = mock();
        let server = async {
            let missing = failure(404, "NotFound", "services \"kubepbx-media-0\" not found");
            answer(&mut handle, StatusCode::NOT_FOUND, &missing).await;
        };
        let (found, ()) = tokio::join!(wait_for_address(client, NS, NAME), server);
        let error = found.unwrap_err();
        let Error::NotFound { namespace, name } = &error else {
            panic!("not NotFound: {error:?}");
        };
        assert_eq!((namespace.as_str(), name.as_str()), (NS, NAME));
        let text = error.to_string();
        assert!(
            text.contains("kubepbx-media-0 in namespace office"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_forbidden_read_names_the_permission() {
        let (client, mut handle) = mock();
        let said = "services \"kubepbx-media-0\" is forbidden: User \
                    \"system:serviceaccount:office:default\" cannot get resource \"services\"";
        let server = async {
            answer(
                &mut handle,
                StatusCode::FORBIDDEN,
                &failure(403, "Forbidden", said),
            )
            .await;
        };
        let (found, ()) = tokio::join!(wait_for_address(client, NS, NAME), server);
        let error = found.unwrap_err();
        assert!(matches!(&error, Error::Forbidden { message, .. } if message == said));
        let text = error.to_string();
        assert!(
            text.contains("`get` permission on `services` in namespace office"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_ip_service_is_an_error_advising_advertise() {
        let (client, mut handle) = mock();
        let server = async {
            answer(
                &mut handle,
                StatusCode::OK,
                &service("ClusterIP", json!({})),
            )
            .await;
        };
        let (found, ()) = tokio::join!(wait_for_address(client, NS, NAME), server);
        let error = found.unwrap_err();
        assert!(
            matches!(&error, Error::NotLoadBalancer { kind, .. } if kind == "ClusterIP"),
            "{error:?}"
        );
        assert!(error.to_string().contains("--advertise instead"), "{error}");
    }

    #[tokio::test]
    async fn a_name_that_cannot_name_a_service_is_refused_before_any_request() {
        for bad in [
            "",
            "Media",
            "media/0",
            "-media",
            "media-",
            "0media",
            &"m".repeat(64),
        ] {
            let (client, _handle) = mock();
            let found = wait_for_address(client, NS, bad).await;
            assert!(
                matches!(&found, Err(Error::InvalidName { name }) if name == bad),
                "{bad:?}: {found:?}"
            );
        }
        for good in ["kubepbx-sip", "m", "media-0", &"m".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_due_at_the_start_and_then_every_thirty_seconds() {
        let mut progress = Progress::new();
        assert_eq!(progress.due(), Some(0));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(progress.due(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(progress.due(), Some(30));
        assert_eq!(progress.due(), None);
    }
}
