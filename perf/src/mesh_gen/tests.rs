use std::collections::BTreeMap;

use mesh_config::validation::validate;
use mesh_config::{Kind, parse_all};

use super::*;

fn counts(resources: &[AnyResource]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for resource in resources {
        *counts.entry(resource.kind().info().kind).or_default() += 1;
    }
    counts
}

fn small() -> MeshShape {
    MeshShape {
        services: 6,
        endpoints_per_service: 2,
        namespaces: 3,
        virtual_services: true,
        destination_rules: true,
        sidecar_scoping: true,
        gateway_hosts: 4,
    }
}

/// The resource's spec as JSON, for reading fields without the types.
fn spec(resource: &AnyResource) -> Value {
    serde_json::to_value(resource).unwrap()["spec"].clone()
}

fn weights(virtual_service: &AnyResource) -> Vec<u64> {
    spec(virtual_service)["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|route| route["weight"].as_u64().unwrap_or(100))
        .collect()
}

#[test]
fn the_reference_mesh_has_istios_shape() {
    let resources = MeshShape::reference().resources();
    assert_eq!(
        counts(&resources),
        BTreeMap::from([
            ("DestinationRule", 1000),
            ("ServiceEntry", 1000),
            ("Sidecar", 50),
            ("VirtualService", 1000),
            ("WorkloadEntry", 2000),
        ])
    );
}

#[test]
fn every_generated_resource_passes_istios_validation() {
    for shape in [
        small(),
        MeshShape {
            destination_rules: false,
            ..small()
        },
        MeshShape {
            services: 1,
            namespaces: 2,
            destination_rules: false,
            ..small()
        },
    ] {
        let mut resources = shape.resources();
        resources.extend((0..20).map(|step| shape.endpoint_churn(step)));
        resources.extend((0..20).filter_map(|step| shape.virtual_service_edit(step)));
        for resource in &resources {
            let report = validate(resource);
            assert!(
                report.is_valid() && report.warnings.is_empty(),
                "{}: {:?} {:?}",
                key_of(resource),
                report.errors,
                report.warnings
            );
        }
    }
}

#[test]
fn names_and_addresses_are_deterministic() {
    let shape = small();
    assert_eq!(shape.resources(), shape.resources());
    let workloads = shape.workloads();
    assert_eq!(workloads.len(), 12);
    let last = &workloads[11];
    assert_eq!(
        (
            last.name.as_str(),
            last.namespace.as_str(),
            last.address.as_str()
        ),
        ("svc-5-1", "ns-2", "10.0.0.12")
    );
    assert_eq!(last.labels["version"], "v2");
    let entry = shape.service_entry(5);
    assert_eq!(
        spec(&entry)["hosts"],
        json!(["svc-5.ns-2.svc.cluster.local"])
    );
}

#[test]
fn endpoint_churn_moves_one_workload_entry_round_robin_over_services() {
    let shape = small();
    let moved: Vec<(String, String)> = (0..8)
        .map(|step| {
            let entry = shape.endpoint_churn(step);
            (
                key_of(&entry),
                spec(&entry)["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let keys: Vec<&str> = moved.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "WorkloadEntry/ns-0/svc-0-0",
            "WorkloadEntry/ns-1/svc-1-0",
            "WorkloadEntry/ns-2/svc-2-0",
            "WorkloadEntry/ns-0/svc-3-0",
            "WorkloadEntry/ns-1/svc-4-0",
            "WorkloadEntry/ns-2/svc-5-0",
            "WorkloadEntry/ns-0/svc-0-1",
            "WorkloadEntry/ns-1/svc-1-1",
        ]
    );
    let generated: Vec<String> = shape.workloads().into_iter().map(|w| w.address).collect();
    for (key, address) in &moved {
        assert!(!generated.contains(address), "{key} did not move");
    }
    // Only the address changes: labels still select it for its service.
    let churned = spec(&shape.endpoint_churn(0));
    let original = spec(&workload_entry(&shape.workload(0, 0)));
    assert_eq!(churned["labels"], original["labels"]);
}

#[test]
fn every_virtual_service_edit_changes_the_weights() {
    let shape = small();
    let mut last = BTreeMap::new();
    for resource in shape.resources() {
        if resource.kind() == Kind::VirtualService {
            last.insert(key_of(&resource), weights(&resource));
        }
    }
    for step in 0..30 {
        let edit = shape.virtual_service_edit(step).unwrap();
        let key = key_of(&edit);
        assert!(key.starts_with("VirtualService/ns-"), "{key}");
        let now = weights(&edit);
        assert_eq!(now.iter().sum::<u64>(), 100);
        assert_ne!(last.insert(key.clone(), now.clone()), Some(now), "{key}");
    }
}

#[test]
fn without_destination_rules_the_split_is_between_services_of_a_namespace() {
    let shape = MeshShape {
        destination_rules: false,
        ..small()
    };
    let route = &spec(&shape.virtual_service(1, None))["http"][0]["route"];
    assert_eq!(
        route,
        &json!([
            {"destination": {"host": "svc-1.ns-1.svc.cluster.local"}, "weight": 90},
            {"destination": {"host": "svc-4.ns-1.svc.cluster.local"}, "weight": 10},
        ])
    );
    let alone = MeshShape {
        services: 1,
        ..shape
    };
    let first = spec(&alone.virtual_service(0, None));
    let edited = spec(&alone.virtual_service_edit(0).unwrap());
    assert_ne!(first["http"][0]["timeout"], edited["http"][0]["timeout"]);
}

#[test]
fn gateway_hosts_are_virtual_services_bound_to_one_gateway() {
    let shape = MeshShape {
        virtual_services: false,
        ..small()
    };
    let resources = shape.resources();
    assert_eq!(counts(&resources)["Gateway"], 1);
    assert_eq!(counts(&resources)["VirtualService"], 4);
    let edit = shape.virtual_service_edit(5).unwrap();
    assert_eq!(key_of(&edit), "VirtualService/ns-1/gw-1");
    assert_eq!(
        spec(&edit)["gateways"],
        json!(["istio-system/ingressgateway"])
    );
    let none = MeshShape {
        gateway_hosts: 0,
        ..shape
    };
    assert_eq!(none.virtual_service_edit(0), None);
}

#[test]
fn the_directory_holds_one_file_per_namespace_that_reads_back_the_same() {
    let shape = small();
    let dir = tempfile::tempdir().unwrap();
    let mut config = shape.write_dir(dir.path()).unwrap();
    let files: Vec<&str> = config.files().collect();
    assert_eq!(
        files,
        ["istio-system.yaml", "ns-0.yaml", "ns-1.yaml", "ns-2.yaml"]
    );
    let read_back = read_dir(dir.path());
    let mut generated = shape.resources();
    generated.sort_by_key(key_of);
    assert_eq!(read_back, generated);

    let churn = shape.endpoint_churn(7);
    config.put(churn.clone()).unwrap();
    let read_back = read_dir(dir.path());
    assert!(read_back.contains(&churn));
    assert_eq!(read_back.len(), generated.len());
    assert!(config.total_bytes().unwrap() > 0);
}

/// Every resource of the directory's files, sorted by key.
fn read_dir(dir: &Path) -> Vec<AnyResource> {
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temporary file was left: {name}");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = parse_all(&name, &text).unwrap_or_else(|errors| panic!("{errors:?}"));
        resources.extend(parsed.into_iter().map(|parsed| parsed.resource));
    }
    resources.sort_by_key(key_of);
    resources
}
