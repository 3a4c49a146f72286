//! Egress of job pods: the allowlist a job gets (the engine's entries
//! plus its pipeline's `egress_allowlist`), and the one policy per job that
//! opens it: a CiliumNetworkPolicy when the cluster runs Cilium, else a plain
//! NetworkPolicy. Applying them is [`super::egress`]'s part.
//!
//! An allowlist entry is a host name (`pypi.org`), a wildcard domain
//! (`*.github.com`), an IPv4/IPv6 CIDR (`10.20.0.0/16`) or a single address
//! (`10.20.0.1`, taken as its `/32` or `/128`), optionally with
//! `:PORT`, which for a CIDR follows the prefix length (`fd00::/8:5000`).
//! Without a port, host names allow 443 and CIDRs allow every port. DNS to
//! the cluster's resolver is always allowed, since Cilium learns the
//! addresses of allowed names from the DNS answers it sees.
//!
//! A plain NetworkPolicy cannot name hosts, so its version keeps only the
//! CIDR entries and DNS.
//!
//! Each policy selects one job's pod by its `danube.dev/job` label and is
//! owned by that pod, so the cluster's garbage collector removes it with
//! the pod even when the engine could not.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::pod::{JOB_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, label_value};
use crate::model::JobId;

/// Port allowed for a host name without one.
const DEFAULT_HOST_PORT: u16 = 443;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "egress allowlist entry `{entry}` is invalid: {reason}; use a host name (`pypi.org`), a \
         wildcard domain (`*.github.com`), an address or a CIDR (`10.0.0.0/8`), optionally \
         followed by `:PORT` (an IPv6 address with a port in brackets: `[fd00::1]:443`)"
    )]
    InvalidEntry { entry: String, reason: &'static str },

    #[error(
        "this engine does not let pipelines widen egress (`--egress-fixed`), but the \
         pipeline's egress_allowlist adds {}: remove them from the pipeline, or ask the \
         engine's admin to add them with `--egress-allow`",
        .0.iter().map(|entry| format!("`{entry}`")).collect::<Vec<_>>().join(", ")
    )]
    WideningForbidden(Vec<String>),
}

/// The engine's own part of every job's allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressSettings {
    /// Entries every job gets (`--egress-allow`).
    pub allow: Vec<String>,
    /// Pipelines may not add entries beyond [`Self::allow`]; one that tries
    /// fails when it declares its plan.
    pub fixed: bool,
}

impl EgressSettings {
    /// Returns the allowlist of a job whose pipeline declared `pipeline`:
    /// the engine's entries, then the pipeline's entries that no earlier
    /// entry already allows.
    ///
    /// # Errors
    ///
    /// An entry is invalid (the error names it), or the pipeline adds
    /// entries while [`Self::fixed`] is set (the error lists them).
    pub fn job_allowlist(&self, pipeline: &[String]) -> Result<Vec<EgressEntry>, NetworkError> {
        let mut entries = parse_allowlist(&self.allow)?;
        let mut added = Vec::new();
        for text in pipeline {
            let entry = EgressEntry::parse(text)?;
            if !entries.iter().any(|known| entry.is_within(known)) {
                added.push(text.trim().to_owned());
                entries.push(entry);
            }
        }
        if self.fixed && !added.is_empty() {
            return Err(NetworkError::WideningForbidden(added));
        }
        Ok(entries)
    }
}

/// Parses every entry of an allowlist.
///
/// # Errors
///
/// The first invalid entry, named.
pub fn parse_allowlist(allowlist: &[String]) -> Result<Vec<EgressEntry>, NetworkError> {
    allowlist
        .iter()
        .map(|entry| EgressEntry::parse(entry))
        .collect()
}

/// One parsed allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressEntry {
    Host { name: String, port: u16 },
    Domain { pattern: String, port: u16 },
    Cidr { cidr: String, port: Option<u16> },
}

impl EgressEntry {
    /// Returns whether a plain NetworkPolicy can express the entry, which
    /// only CIDRs allow.
    pub fn is_cidr(&self) -> bool {
        matches!(self, EgressEntry::Cidr { .. })
    }

    /// Returns whether `wider` allows every connection this entry allows:
    /// the same host, a host one label under a wildcard domain, or a CIDR
    /// inside another, on the same port or under an entry for any port.
    pub fn is_within(&self, wider: &EgressEntry) -> bool {
        match (self, wider) {
            (
                EgressEntry::Host { name, port },
                EgressEntry::Host {
                    name: known,
                    port: on,
                },
            ) => name == known && port == on,
            (EgressEntry::Host { name, port }, EgressEntry::Domain { pattern, port: on }) => {
                let suffix = &pattern[1..];
                port == on
                    && name
                        .strip_suffix(suffix)
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            }
            (EgressEntry::Domain { .. }, EgressEntry::Domain { .. }) => self == wider,
            (
                EgressEntry::Cidr { cidr, port },
                EgressEntry::Cidr {
                    cidr: known,
                    port: on,
                },
            ) => (on.is_none() || on == port) && cidr_is_within(cidr, known),
            _ => false,
        }
    }

    /// Parses one entry of `egress_allowlist` or `--egress-allow`. A CIDR
    /// is kept as its network address (`10.0.0.1/8` is `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<EgressEntry, NetworkError> {
        let invalid = |reason| NetworkError::InvalidEntry {
            entry: text.chars().take(200).collect(),
            reason,
        };
        let trimmed = text.trim();
        let parse_port = |port: &str| {
            port.parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))
        };

        // A CIDR: the IPv6 address may hold `:`, so the port is looked for
        // after the prefix length only.
        if let Some((ip, rest)) = trimmed.split_once('/') {
            let (prefix, port) = match rest.split_once(':') {
                Some((prefix, port)) => (prefix, Some(parse_port(port)?)),
                None => (rest, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| invalid("the part before `/` is not an IP address"))?;
            let prefix: u8 = prefix
                .parse()
                .map_err(|_| invalid("the prefix length is not a number"))?;
            if prefix > address_bits(ip) {
                return Err(invalid("the prefix length is longer than the address"));
            }
            return Ok(EgressEntry::Cidr {
                cidr: format!("{}/{prefix}", network_address(ip, prefix)),
                port,
            });
        }

        // An IPv6 address with a port, in brackets.
        if let Some(rest) = trimmed.strip_prefix('[') {
            let (address, port) = rest
                .split_once(']')
                .ok_or_else(|| invalid("the `[` has no `]`"))?;
            let ip: std::net::Ipv6Addr = address
                .parse()
                .map_err(|_| invalid("the part in brackets is not an IPv6 address"))?;
            let port = match port {
                "" => None,
                port => {
                    Some(parse_port(port.strip_prefix(':').ok_or_else(|| {
                        invalid("only `:PORT` may follow the `]`")
                    })?)?)
                }
            };
            return Ok(single_address(ip.into(), port));
        }

        // A bare address is the CIDR of that one address: a host name
        // pattern would never match it.
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(single_address(ip, None));
        }
        let (address, port) = match trimmed.rsplit_once(':') {
            Some((address, port)) => (address, Some(parse_port(port)?)),
            None => (trimmed, None),
        };
        if let Ok(ip) = address.parse::<std::net::Ipv4Addr>() {
            return Ok(single_address(ip.into(), port));
        }
        let port = port.unwrap_or(DEFAULT_HOST_PORT);
        let not_a_name = "it is not a host name, a domain or an address";
        if let Some(domain) = address.strip_prefix("*.") {
            if !is_host_name(domain) {
                return Err(invalid(not_a_name));
            }
            return Ok(EgressEntry::Domain {
                pattern: format!("*.{}", domain.to_ascii_lowercase()),
                port,
            });
        }
        if !is_host_name(address) {
            return Err(invalid(not_a_name));
        }
        Ok(EgressEntry::Host {
            name: address.to_ascii_lowercase(),
            port,
        })
    }
}

/// Returns the number of bits of `ip`'s family: 32 or 128.
fn address_bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Returns `ip` with the bits past `prefix` cleared.
fn network_address(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(ip) => {
            let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(ip) & mask).into())
        }
        IpAddr::V6(ip) => {
            let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(ip) & mask).into())
        }
    }
}

/// Returns whether CIDR `inner` lies inside CIDR `outer`; both are in the
/// `ADDRESS/PREFIX` form [`EgressEntry::parse`] writes.
fn cidr_is_within(inner: &str, outer: &str) -> bool {
    let (Some((inner_ip, inner_prefix)), Some((outer_ip, outer_prefix))) =
        (split_cidr(inner), split_cidr(outer))
    else {
        return false;
    };
    if inner_ip.is_ipv4() != outer_ip.is_ipv4() || outer_prefix > inner_prefix {
        return false;
    }
    let width = if inner_ip.is_ipv4() { 32 } else { 128 };
    let network = |ip: IpAddr| {
        let bits = match ip {
            IpAddr::V4(ip) => u128::from(u32::from(ip)),
            IpAddr::V6(ip) => u128::from(ip),
        };
        bits.checked_shr(u32::from(width - outer_prefix))
            .unwrap_or(0)
    };
    network(inner_ip) == network(outer_ip)
}

fn split_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = cidr.split_once('/')?;
    Some((ip.parse().ok()?, prefix.parse().ok()?))
}

/// Returns the CIDR entry that allows exactly `ip`.
fn single_address(ip: IpAddr, port: Option<u16>) -> EgressEntry {
    let prefix = address_bits(ip);
    EgressEntry::Cidr {
        cidr: format!("{ip}/{prefix}"),
        port,
    }
}

impl std::fmt::Display for EgressEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressEntry::Host { name, port } => write!(f, "{name}:{port}"),
            EgressEntry::Domain { pattern, port } => write!(f, "{pattern}:{port}"),
            EgressEntry::Cidr { cidr, port: None } => f.write_str(cidr),
            EgressEntry::Cidr {
                cidr,
                port: Some(port),
            } => write!(f, "{cidr}:{port}"),
        }
    }
}

/// The job a policy is for, and the pod that owns it once it exists.
#[derive(Clone, Copy, Debug)]
pub struct PolicyFor<'a> {
    pub namespace: &'a str,
    pub job_id: &'a JobId,
    /// The job's pod; `None` before it exists, as in `--dry-run`.
    pub owner: Option<PodOwner<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct PodOwner<'a> {
    pub name: &'a str,
    pub uid: &'a str,
}

/// Returns the name of a job's egress policy.
pub fn policy_name(job_id: &JobId) -> String {
    format!("{}-egress", super::pod::pod_name(job_id))
}

impl PolicyFor<'_> {
    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (JOB_LABEL.to_owned(), label_value(self.job_id.as_str())),
        ])
    }

    fn owner_references(&self) -> Vec<OwnerReference> {
        self.owner
            .map(|owner| OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: owner.name.into(),
                uid: owner.uid.into(),
                controller: None,
                block_owner_deletion: None,
            })
            .into_iter()
            .collect()
    }
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || character == '-')
        })
}

/// A CiliumNetworkPolicy (`cilium.io/v2`), with the fields Danube writes.
/// Unknown fields are rejected so that manifests can be checked against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: CiliumMetadata,
    pub spec: CiliumSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumMetadata {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Set by the API server; never sent by the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumSpec {
    pub endpoint_selector: CiliumSelector,
    pub egress: Vec<CiliumEgressRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumSelector {
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumEgressRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_endpoints: Vec<CiliumSelector>,
    #[serde(default, rename = "toFQDNs", skip_serializing_if = "Vec::is_empty")]
    pub to_fqdns: Vec<CiliumFqdn>,
    #[serde(default, rename = "toCIDR", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<CiliumPortRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiliumFqdn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiliumPortRule {
    pub ports: Vec<CiliumPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<CiliumL7Rules>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiliumPort {
    pub port: String,
    pub protocol: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiliumL7Rules {
    pub dns: Vec<CiliumFqdn>,
}

fn port_rule(port: u16, protocol: &str) -> CiliumPortRule {
    CiliumPortRule {
        ports: vec![CiliumPort {
            port: port.to_string(),
            protocol: protocol.into(),
        }],
        rules: None,
    }
}

/// Builds the CiliumNetworkPolicy that lets the job's pod reach `entries`.
pub fn cilium_egress_policy(job: &PolicyFor<'_>, entries: &[EgressEntry]) -> CiliumNetworkPolicy {
    let dns = CiliumEgressRule {
        to_endpoints: vec![CiliumSelector {
            match_labels: BTreeMap::from([
                (
                    "k8s:io.kubernetes.pod.namespace".into(),
                    "kube-system".into(),
                ),
                ("k8s:k8s-app".into(), "kube-dns".into()),
            ]),
        }],
        to_ports: vec![CiliumPortRule {
            ports: vec![CiliumPort {
                port: "53".into(),
                protocol: "ANY".into(),
            }],
            rules: Some(CiliumL7Rules {
                dns: vec![CiliumFqdn {
                    match_name: None,
                    match_pattern: Some("*".into()),
                }],
            }),
        }],
        ..CiliumEgressRule::default()
    };
    let mut egress = vec![dns];

    // One rule per port, so a name allowed on 443 is not allowed on 22.
    let mut names_by_port: BTreeMap<u16, Vec<CiliumFqdn>> = BTreeMap::new();
    for entry in entries {
        match entry {
            EgressEntry::Host { name, port } => {
                names_by_port.entry(*port).or_default().push(CiliumFqdn {
                    match_name: Some(name.clone()),
                    match_pattern: None,
                })
            }
            EgressEntry::Domain { pattern, port } => {
                names_by_port.entry(*port).or_default().push(CiliumFqdn {
                    match_name: None,
                    match_pattern: Some(pattern.clone()),
                })
            }
            EgressEntry::Cidr { cidr, port } => egress.push(CiliumEgressRule {
                to_cidr: vec![cidr.clone()],
                to_ports: port
                    .map(|port| vec![port_rule(port, "TCP")])
                    .unwrap_or_default(),
                ..CiliumEgressRule::default()
            }),
        }
    }
    for (port, names) in names_by_port {
        egress.push(CiliumEgressRule {
            to_fqdns: names,
            to_ports: vec![port_rule(port, "TCP")],
            ..CiliumEgressRule::default()
        });
    }

    CiliumNetworkPolicy {
        api_version: "cilium.io/v2".into(),
        kind: "CiliumNetworkPolicy".into(),
        metadata: CiliumMetadata {
            name: policy_name(job.job_id),
            namespace: job.namespace.into(),
            labels: job.selector(),
            owner_references: job.owner_references(),
            uid: None,
            resource_version: None,
            creation_timestamp: None,
        },
        spec: CiliumSpec {
            endpoint_selector: CiliumSelector {
                match_labels: job.selector(),
            },
            egress,
        },
    }
}

/// Builds the plain NetworkPolicy equivalent for clusters without Cilium:
/// DNS and the CIDR entries only, since it cannot name hosts.
pub fn plain_egress_policy(job: &PolicyFor<'_>, entries: &[EgressEntry]) -> NetworkPolicy {
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    };
    // DNS to the cluster's resolver only, as the namespace's default
    // policy allows: a rule without `to` would open port 53 everywhere.
    let selector = |key: &str, value: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    };
    let mut egress = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector("kubernetes.io/metadata.name", "kube-system")),
            pod_selector: Some(selector("k8s-app", "kube-dns")),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
    }];
    for entry in entries {
        if let EgressEntry::Cidr { cidr, port } = entry {
            egress.push(NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: cidr.clone(),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: port.map(|port| {
                    vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(port))),
                        protocol: Some("TCP".into()),
                        ..NetworkPolicyPort::default()
                    }]
                }),
            });
        }
    }
    let owners = job.owner_references();
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(job.job_id)),
            namespace: Some(job.namespace.into()),
            labels: Some(job.selector()),
            owner_references: Some(owners).filter(|owners| !owners.is_empty()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(job.selector()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_default_ports() {
        assert_eq!(
            EgressEntry::parse("PyPI.org").unwrap(),
            EgressEntry::Host {
                name: "pypi.org".into(),
                port: 443
            }
        );
        assert_eq!(
            EgressEntry::parse("*.github.com:22").unwrap(),
            EgressEntry::Domain {
                pattern: "*.github.com".into(),
                port: 22
            }
        );
        assert_eq!(
            EgressEntry::parse("10.20.0.0/16").unwrap(),
            EgressEntry::Cidr {
                cidr: "10.20.0.0/16".into(),
                port: None
            }
        );
        assert_eq!(
            EgressEntry::parse("fd00::/8:5000").unwrap(),
            EgressEntry::Cidr {
                cidr: "fd00::/8".into(),
                port: Some(5000)
            }
        );
    }

    #[test]
    fn invalid_entries_are_named() {
        for (entry, reason) in [
            ("", "not a host name"),
            (
                "http://pypi.org",
                "the part before `/` is not an IP address",
            ),
            ("*.", "not a host name"),
            (
                "10.0.0.0/33",
                "the prefix length is longer than the address",
            ),
            ("fd00::/129", "the prefix length is longer than the address"),
            ("host:0", "not a number from 1 to 65535"),
            ("host:99999", "not a number from 1 to 65535"),
            ("[fd00::1", "the `[` has no `]`"),
            ("[10.0.0.1]:443", "not an IPv6 address"),
            ("[fd00::1]443", "only `:PORT` may follow"),
            ("a b", "not a host name"),
        ] {
            let error = EgressEntry::parse(entry).unwrap_err().to_string();
            assert!(
                error.contains(&format!("entry `{entry}` is invalid")),
                "{error}"
            );
            assert!(error.contains(reason), "{entry}: {error}");
        }
    }

    #[test]
    fn addresses_with_ports_and_host_bits_parse() {
        assert_eq!(
            EgressEntry::parse("[fd00::1]:443").unwrap(),
            EgressEntry::Cidr {
                cidr: "fd00::1/128".into(),
                port: Some(443)
            }
        );
        assert_eq!(
            EgressEntry::parse("10.0.0.1/8").unwrap(),
            EgressEntry::Cidr {
                cidr: "10.0.0.0/8".into(),
                port: None
            }
        );
        assert_eq!(
            EgressEntry::parse("fd00::1:2/16:5000").unwrap(),
            EgressEntry::Cidr {
                cidr: "fd00::/16".into(),
                port: Some(5000)
            }
        );
    }

    fn entries(allowlist: &[&str]) -> Vec<EgressEntry> {
        allowlist
            .iter()
            .map(|entry| EgressEntry::parse(entry).unwrap())
            .collect()
    }

    #[test]
    fn cilium_policy_groups_names_by_port_and_allows_dns() {
        let job_id = JobId("0190-job".into());
        let job = PolicyFor {
            namespace: "danube-jobs",
            job_id: &job_id,
            owner: Some(PodOwner {
                name: "danube-job-0190-job",
                uid: "uid-1",
            }),
        };

        let policy = cilium_egress_policy(
            &job,
            &entries(&["pypi.org", "*.github.com", "10.0.0.0/8:5000"]),
        );

        let egress = &policy.spec.egress;
        assert_eq!(egress.len(), 3);
        assert_eq!(egress[0].to_ports[0].ports[0].port, "53");
        assert_eq!(egress[1].to_cidr, ["10.0.0.0/8"]);
        assert_eq!(egress[1].to_ports[0].ports[0].port, "5000");
        assert_eq!(egress[2].to_fqdns.len(), 2);
        assert_eq!(egress[2].to_ports[0].ports[0].port, "443");
        assert_eq!(
            policy.spec.endpoint_selector.match_labels[JOB_LABEL],
            "0190-job"
        );
        assert_eq!(policy.metadata.name, "danube-job-0190-job-egress");
        let owner = &policy.metadata.owner_references[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", "uid-1"));
    }

    #[test]
    fn plain_policy_keeps_only_cidrs() {
        let job_id = JobId("0190-job".into());
        let job = PolicyFor {
            namespace: "danube-jobs",
            job_id: &job_id,
            owner: None,
        };

        let policy = plain_egress_policy(&job, &entries(&["pypi.org", "192.168.0.0/16"]));

        assert_eq!(policy.metadata.owner_references, None);
        let spec = policy.spec.unwrap();
        let selector = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[JOB_LABEL], "0190-job");
        let egress = spec.egress.unwrap();
        assert_eq!(egress.len(), 2);
        let dns = &egress[0]
            .to
            .as_ref()
            .expect("DNS goes to the resolver only")[0];
        let dns_pods = dns
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(dns_pods["k8s-app"], "kube-dns");
        let dns_namespaces = dns.namespace_selector.as_ref().unwrap();
        assert_eq!(
            dns_namespaces.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "kube-system"
        );
        let peer = &egress[1].to.as_ref().unwrap()[0];
        assert_eq!(peer.ip_block.as_ref().unwrap().cidr, "192.168.0.0/16");
    }

    #[test]
    fn bare_addresses_become_single_address_cidrs() {
        assert_eq!(
            EgressEntry::parse("10.0.0.1").unwrap(),
            EgressEntry::Cidr {
                cidr: "10.0.0.1/32".into(),
                port: None
            }
        );
        assert_eq!(
            EgressEntry::parse("10.0.0.1:5000").unwrap(),
            EgressEntry::Cidr {
                cidr: "10.0.0.1/32".into(),
                port: Some(5000)
            }
        );
        assert_eq!(
            EgressEntry::parse("fd00::1").unwrap(),
            EgressEntry::Cidr {
                cidr: "fd00::1/128".into(),
                port: None
            }
        );
    }

    #[test]
    fn job_allowlist_adds_the_pipeline_entries_once() {
        let settings = EgressSettings {
            allow: vec!["pypi.org".into()],
            fixed: false,
        };

        let list = settings
            .job_allowlist(&["PyPI.org:443".into(), "10.0.0.0/8".into()])
            .unwrap();

        assert_eq!(list, entries(&["pypi.org", "10.0.0.0/8"]));
        let error = settings.job_allowlist(&["bad entry".into()]).unwrap_err();
        assert!(
            matches!(&error, NetworkError::InvalidEntry { entry, .. } if entry == "bad entry"),
            "{error}"
        );
    }

    #[test]
    fn fixed_settings_refuse_new_pipeline_entries() {
        let settings = EgressSettings {
            allow: vec!["pypi.org".into()],
            fixed: true,
        };

        assert!(settings.job_allowlist(&["pypi.org".into()]).is_ok());
        let error = settings
            .job_allowlist(&["pypi.org".into(), "*.github.com".into()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("adds `*.github.com`"), "{error}");
        assert!(error.contains("--egress-allow"), "{error}");
    }

    #[test]
    fn fixed_settings_accept_entries_inside_the_engine_ones() {
        let settings = EgressSettings {
            allow: vec![
                "10.0.0.0/8".into(),
                "fd00::/8:5000".into(),
                "*.github.com".into(),
            ],
            fixed: true,
        };

        let list = settings
            .job_allowlist(&[
                "10.1.0.0/16".into(),
                "10.2.3.4:22".into(),
                "fd00::1/128:5000".into(),
                "fd12::/16:5000".into(),
                "api.github.com".into(),
            ])
            .unwrap();

        assert_eq!(
            list,
            entries(&["10.0.0.0/8", "fd00::/8:5000", "*.github.com"])
        );
        for outside in [
            "11.0.0.0/16",
            "10.0.0.0/7",
            "fd00::/7:5000",
            "fd00::1:22",
            "a.b.github.com",
            "github.com",
            "api.github.com:80",
            "::ffff:10.0.0.1",
        ] {
            let error = settings.job_allowlist(&[outside.into()]).unwrap_err();
            assert!(
                matches!(error, NetworkError::WideningForbidden(_)),
                "{outside}: {error}"
            );
        }
    }
}
