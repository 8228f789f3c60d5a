//! The checked-in CRD matches what the operator generates.

#[test]
fn checked_in_crd_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/chattenant.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap();
    let generated = parley_operator::schema::chat_tenant_crd_yaml().unwrap();
    assert!(
        checked_in == generated,
        "crds/chattenant.yaml is stale; regenerate it with `cargo run -p parley-operator -- crd > crds/chattenant.yaml`"
    );
}

#[test]
fn crd_has_no_null_in_enums() {
    let yaml = parley_operator::schema::chat_tenant_crd_yaml().unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let mut stack = vec![&value];
    while let Some(node) = stack.pop() {
        match node {
            serde_yaml::Value::Mapping(map) => {
                if let Some(serde_yaml::Value::Sequence(values)) = map.get("enum") {
                    assert!(
                        values.iter().all(|v| !v.is_null()),
                        "null in enum: {values:?}"
                    );
                }
                stack.extend(map.values());
            }
            serde_yaml::Value::Sequence(items) => stack.extend(items),
            _ => {}
        }
    }
}

#[test]
fn every_spec_field_has_a_description() {
    let crd = parley_operator::schema::chat_tenant_crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    let spec = &schema.properties.as_ref().unwrap()["spec"];
    let mut stack = vec![("spec".to_owned(), spec)];
    while let Some((path, node)) = stack.pop() {
        assert!(node.description.is_some(), "{path} has no description");
        for (name, child) in node.properties.iter().flatten() {
            stack.push((format!("{path}.{name}"), child));
        }
    }
}

#[test]
fn tenant_id_is_immutable_by_rule() {
    let yaml = parley_operator::schema::chat_tenant_crd_yaml().unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let tenant_id = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["tenantId"];
    let rules = tenant_id["x-kubernetes-validations"].as_sequence().unwrap();
    assert!(
        rules.iter().any(|rule| rule["rule"] == "self == oldSelf"),
        "{rules:?}"
    );
}

#[test]
fn printer_columns_are_listed() {
    let crd = parley_operator::schema::chat_tenant_crd();
    let names: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| column.name.clone())
        .collect();
    assert_eq!(names, ["Ready", "Namespace", "Endpoint", "Age"]);
}
