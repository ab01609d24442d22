//! Skill IR validation, the transpiler (golden files, determinism), RBAC desired state and the reconcile
//! plan, on the product page's own catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use claresia_domain::catalog::{
    desired_state, name_clashes, plan, Acl, Action, Archetype, InstallationPreference, NameClash,
    RemoteSkill, WorkspaceMapping,
};
use claresia_domain::footer::{fill, FOOTER_TEMPLATE};
use claresia_domain::skill_ir::{validate, SkillIr};
use claresia_domain::transpile::transpile;
use claresia_domain::TenantSlug;
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn t(s: &str) -> TenantSlug {
    TenantSlug::parse(s).unwrap()
}

fn example(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("examples").join(name)).unwrap())
        .unwrap()
}

fn skills() -> BTreeMap<String, SkillIr> {
    ["incident-postmortem", "prd-review", "standup-notes"]
        .into_iter()
        .map(|id| {
            let ir = validate(&example(&format!("skill-{id}.json")), &t("dainese"), id).unwrap();
            (id.to_owned(), ir)
        })
        .collect()
}

fn archetypes() -> BTreeMap<String, Archetype> {
    ["engineer", "product-manager"]
        .into_iter()
        .map(|a| {
            let arch: Archetype =
                serde_json::from_value(example(&format!("archetype-{a}.json"))).unwrap();
            (a.to_owned(), arch)
        })
        .collect()
}

#[test]
fn the_examples_are_valid() {
    assert_eq!(skills().len(), 3);
    assert_eq!(archetypes().len(), 2);
}

#[test]
fn validation_reports_every_problem_with_its_path() {
    let mut doc = example("skill-incident-postmortem.json");
    doc["id"] = json!("Incident_Postmortem");
    doc["title"] = json!("");
    doc["description"] = json!("uses <xml>");
    doc["instructions"] = json!("   ");
    doc["ir_version"] = json!(2);
    doc["tittle"] = json!("typo");
    doc["parameters"][0]["name"] = json!("Incident");
    doc["parameters"][1]["default"] = json!("sev9");
    doc["parameters"][2]["type"] = json!("bool");
    doc["parameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "severity", "type": "integer", "enum": ["a"]}));
    let problems = validate(&doc, &t("dainese"), "incident-postmortem").unwrap_err();
    let paths: BTreeSet<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "$.id",
        "$.title",
        "$.description",
        "$.instructions",
        "$.ir_version",
        "$.tittle",
        "$.parameters[0].name",
        "$.parameters[1].default",
        "$.parameters[2].type",
        "$.parameters[3].name",
        "$.parameters[3].enum[0]",
    ] {
        assert!(paths.contains(want), "missing {want} in {problems:?}");
    }
    let typo = problems.iter().find(|p| p.path == "$.tittle").unwrap();
    assert!(typo.message.contains("unknown field"));
}

#[test]
fn names_that_claude_would_refuse_are_rejected_with_the_reason() {
    let mut doc = example("skill-prd-review.json");
    doc["id"] = json!("claude-helper");
    let p = validate(&doc, &t("dainese"), "claude-helper").unwrap_err();
    assert!(p[0].message.contains("\"claude\""), "{p:?}");
    let long_id = "a".repeat(40);
    doc["id"] = json!(long_id);
    let p = validate(&doc, &t("a-very-long-tenant-slug-for-test"), &long_id).unwrap_err();
    assert!(p[0].message.contains("64"), "{p:?}");
    doc["id"] = json!("prd-review");
    let p = validate(&doc, &t("anthropic-fans"), "prd-review").unwrap_err();
    assert!(p[0].message.contains("anthropic"));
    let p = validate(&doc, &t("dainese"), "other-id").unwrap_err();
    assert!(p[0].message.contains("URL"));
}

#[test]
fn transpiled_skills_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (id, ir) in skills() {
        let skill = transpile(&ir, &t("dainese"), &t("dainese")).unwrap();
        let text = serde_json::to_string_pretty(&skill).unwrap() + "\n";
        let path = fixtures().join("golden").join(format!("{id}.json"));
        if update {
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(
            text, golden,
            "{id}: transpiler output changed (UPDATE_GOLDEN=1 to accept)"
        );
    }
}

#[test]
fn transpiling_is_deterministic_and_the_hash_follows_the_content() {
    let ir = &skills()["incident-postmortem"];
    let a = serde_json::to_vec(&transpile(ir, &t("dainese"), &t("dainese")).unwrap()).unwrap();
    let b =
        serde_json::to_vec(&transpile(&ir.clone(), &t("dainese"), &t("dainese")).unwrap()).unwrap();
    assert_eq!(a, b);
    let base = transpile(ir, &t("dainese"), &t("dainese")).unwrap();
    let mut changed = ir.clone();
    changed.instructions.push_str("6. One more step.\n");
    let other = transpile(&changed, &t("dainese"), &t("dainese")).unwrap();
    assert_ne!(base.content_hash(), other.content_hash());
    assert!(base.content_hash().starts_with("sha256:"));
}

#[test]
fn skill_md_carries_front_matter_parameters_and_the_footer_template() {
    let ir = &skills()["incident-postmortem"];
    let skill = transpile(ir, &t("dainese"), &t("dainese")).unwrap();
    assert_eq!(skill.name, "claresia-dainese-incident-postmortem");
    assert_eq!(
        skill.metadata["picker_label"],
        "@claresia.gatespic.incident-postmortem"
    );
    assert_eq!(skill.metadata["managed_by"], "claresia");
    assert_eq!(skill.metadata["tenant"], "dainese");
    let md = &skill.files[0].content;
    assert_eq!(
        skill.files[0].path,
        "claresia-dainese-incident-postmortem/SKILL.md"
    );
    assert!(md.starts_with(
        "---\nname: claresia-dainese-incident-postmortem\ndescription: \"Drafts a blameless"
    ));
    assert!(md.contains("- `incident_id` (string, required): Tracker id, e.g. INC-4711"));
    assert!(md.contains(
        "- `severity` (string, one of `\"sev1\"`, `\"sev2\"`, `\"sev3\"`, default `\"sev2\"`)"
    ));
    let footer = fill(FOOTER_TEMPLATE, |k| match k {
        "title" => Some("Incident Postmortem".into()),
        "tenant" => Some("dainese".into()),
        _ => None,
    });
    assert!(md.contains(&footer), "{md}");
    assert_eq!(
        skill.input_schema,
        json!({"type": "object", "additionalProperties": false, "required": ["incident_id"],
               "properties": {
                   "incident_id": {"type": "string", "description": "Tracker id, e.g. INC-4711"},
                   "severity": {"type": "string", "enum": ["sev1", "sev2", "sev3"], "default": "sev2", "description": "Severity as declared"},
                   "include_timeline": {"type": "boolean", "default": true, "description": "Render the minute-by-minute timeline"}}})
    );
    let mut no_footer = ir.clone();
    no_footer.output.footer = false;
    let md = transpile(&no_footer, &t("dainese"), &t("dainese"))
        .unwrap()
        .files[0]
        .content
        .clone();
    assert!(!md.contains("Claresia ·"));
}

#[test]
fn desired_state_unions_grants_and_separates_sub_tenants() {
    let mut arch = archetypes();
    arch.insert(
        "eng-sub".into(),
        Archetype {
            skills: vec!["incident-postmortem".into()],
            group_ids: vec!["grp_eng_sub".into()],
            workspace_ids: vec![],
            sub_tenant: Some(t("dainese-eng")),
            installation_preference: None,
        },
    );
    let mappings = vec![
        WorkspaceMapping {
            workspace_id: "wrkspc_eng".into(),
            group_id: None,
            sub_tenant: Some(t("dainese-eng")),
        },
        WorkspaceMapping {
            workspace_id: "wrkspc_corp".into(),
            group_id: None,
            sub_tenant: None,
        },
    ];
    let state = desired_state(&t("dainese"), &arch, &skills(), &mappings);
    let main = &state[&t("dainese")];
    assert_eq!(main.skills.len(), 3);
    let standup = &main.skills["claresia-dainese-standup-notes"];
    assert_eq!(
        standup.acl,
        Acl {
            workspace_ids: vec!["wrkspc_corp".into()],
            group_ids: vec!["grp_engineering".into(), "grp_product".into()],
            ..Default::default()
        }
    );
    let sub = &state[&t("dainese-eng")];
    assert_eq!(
        sub.skills.keys().collect::<Vec<_>>(),
        vec!["claresia-dainese-eng-incident-postmortem"]
    );
    let s = &sub.skills["claresia-dainese-eng-incident-postmortem"];
    assert_eq!(s.skill.metadata["tenant"], "dainese-eng");
    assert_eq!(s.acl.workspace_ids, vec!["wrkspc_eng".to_string()]);
}

fn remote(id: &str, name: &str, tenant: Option<&str>, hash: &str, acl: Acl) -> RemoteSkill {
    let mut metadata = BTreeMap::new();
    if let Some(tn) = tenant {
        metadata.insert("managed_by".into(), "claresia".into());
        metadata.insert("tenant".into(), tn.into());
        metadata.insert("content_hash".into(), hash.into());
    }
    RemoteSkill {
        id: id.into(),
        name: name.into(),
        metadata,
        acl,
    }
}

#[test]
fn the_plan_creates_updates_deletes_and_never_touches_what_it_does_not_own() {
    let state = desired_state(&t("dainese"), &archetypes(), &skills(), &[]);
    let main = &state[&t("dainese")];
    let pm = &main.skills["claresia-dainese-prd-review"];
    let standup = &main.skills["claresia-dainese-standup-notes"];
    let remotes = vec![
        // Ours, current: unchanged.
        remote(
            "s1",
            "claresia-dainese-prd-review",
            Some("dainese"),
            pm.skill.content_hash(),
            pm.acl.clone(),
        ),
        // Ours, same content, stale ACL: ACL only.
        remote(
            "s2",
            "claresia-dainese-standup-notes",
            Some("dainese"),
            standup.skill.content_hash(),
            Acl::default(),
        ),
        // Ours, no longer granted: delete.
        remote(
            "s3",
            "claresia-dainese-old-skill",
            Some("dainese"),
            "sha256:x",
            Acl::default(),
        ),
        // A sub-tenant's skill shares the prefix: not ours when reconciling dainese.
        remote(
            "s4",
            "claresia-dainese-eng-old-skill",
            Some("dainese-eng"),
            "sha256:x",
            Acl::default(),
        ),
        // Foreign skills with similar names: never touched.
        remote("s5", "claresia-dainese-handmade", None, "", Acl::default()),
        remote(
            "s6",
            "claresia-dainese-spoof",
            Some("acme"),
            "sha256:x",
            Acl::default(),
        ),
    ];
    let p = plan(&t("dainese"), main, &remotes, None);
    assert_eq!(p.unchanged, vec!["claresia-dainese-prd-review".to_string()]);
    let names: Vec<(&str, &str)> = p
        .actions
        .iter()
        .map(|a| {
            let kind = match a {
                Action::Create(_) => "create",
                Action::Update { .. } => "update",
                Action::SetAcl { .. } => "acl",
                Action::Delete { .. } => "delete",
            };
            (kind, a.name())
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("create", "claresia-dainese-incident-postmortem"),
            ("acl", "claresia-dainese-standup-notes"),
            ("delete", "claresia-dainese-old-skill"),
        ]
    );
    // A scoped plan touches only the named skills.
    let scope = BTreeSet::from(["standup-notes".to_string()]);
    let p = plan(&t("dainese"), main, &remotes, Some(&scope));
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].name(), "claresia-dainese-standup-notes");
}

#[test]
fn a_desired_name_held_by_a_foreign_skill_is_a_conflict_not_a_takeover() {
    let state = desired_state(&t("dainese"), &archetypes(), &skills(), &[]);
    let remotes = vec![remote(
        "x",
        "claresia-dainese-prd-review",
        None,
        "",
        Acl::default(),
    )];
    let p = plan(&t("dainese"), &state[&t("dainese")], &remotes, None);
    assert_eq!(p.conflicts.len(), 1);
    assert!(p.conflicts[0].1.contains("does not manage"));
    assert!(p
        .actions
        .iter()
        .all(|a| a.name() != "claresia-dainese-prd-review"));
}

#[test]
fn installation_preferences_take_the_most_permissive_grant_per_group() {
    let mut arch = BTreeMap::new();
    let a = |skills: &[&str], groups: &[&str], pref: Option<InstallationPreference>| Archetype {
        skills: skills.iter().map(|s| s.to_string()).collect(),
        group_ids: groups.iter().map(|s| s.to_string()).collect(),
        workspace_ids: vec![],
        sub_tenant: None,
        installation_preference: pref,
    };
    arch.insert(
        "a".into(),
        a(
            &["standup-notes"],
            &["g1", "g2"],
            Some(InstallationPreference::Available),
        ),
    );
    arch.insert(
        "b".into(),
        a(
            &["standup-notes"],
            &["g2"],
            Some(InstallationPreference::Required),
        ),
    );
    arch.insert("c".into(), a(&["standup-notes"], &["g3"], None));
    let mappings = vec![WorkspaceMapping {
        workspace_id: String::new(),
        group_id: Some("g4".into()),
        sub_tenant: None,
    }];
    let state = desired_state(&t("dainese"), &arch, &skills(), &mappings);
    let acl = &state[&t("dainese")].skills["claresia-dainese-standup-notes"].acl;
    assert_eq!(acl.group_ids, vec!["g1", "g2", "g3", "g4"]);
    assert_eq!(
        acl.preferences,
        BTreeMap::from([
            ("g1".to_owned(), InstallationPreference::Available),
            ("g2".to_owned(), InstallationPreference::Required),
        ])
    );
    assert!(acl.workspace_ids.is_empty());
}

#[test]
fn two_targets_never_publish_one_name() {
    let grant = |skills: &[&str], sub: Option<&str>| Archetype {
        skills: skills.iter().map(|s| s.to_string()).collect(),
        group_ids: vec![],
        workspace_ids: vec![],
        sub_tenant: sub.map(t),
        installation_preference: None,
    };
    let mut arch = BTreeMap::from([
        ("eng".to_owned(), grant(&["eng-standup"], None)),
        ("oncall".to_owned(), grant(&["standup"], Some("acme-eng"))),
    ]);
    let clashes: Vec<_> = name_clashes(&t("acme"), &arch).into_iter().collect();
    assert_eq!(
        clashes,
        [NameClash {
            name: "claresia-acme-eng-standup".into(),
            first: (t("acme"), "eng-standup".into()),
            second: (t("acme-eng"), "standup".into()),
        }]
    );
    assert_eq!(
        clashes[0].to_string(),
        "skill eng-standup of acme and skill standup of acme-eng would both publish as claresia-acme-eng-standup"
    );
    // One skill granted twice to one target is one name, not a clash.
    arch.insert("eng2".into(), grant(&["eng-standup"], None));
    assert_eq!(name_clashes(&t("acme"), &arch).len(), 1);
    arch.remove("oncall");
    assert!(name_clashes(&t("acme"), &arch).is_empty());

    // Stored clashing grants: the first target keeps the name, the other says why it did not publish.
    let ir = |id: &str| {
        let mut doc = example("skill-standup-notes.json");
        doc["id"] = json!(id);
        (id.to_owned(), validate(&doc, &t("acme"), id).unwrap())
    };
    let skills = BTreeMap::from([ir("eng-standup"), ir("standup")]);
    arch.insert("oncall".into(), grant(&["standup"], Some("acme-eng")));
    let state = desired_state(&t("acme"), &arch, &skills, &[]);
    assert!(state[&t("acme")]
        .skills
        .contains_key("claresia-acme-eng-standup"));
    assert!(state[&t("acme-eng")].skills.is_empty());
    assert_eq!(state[&t("acme-eng")].problems.len(), 1);
    assert!(state[&t("acme-eng")].problems[0]
        .1
        .contains("already acme's"));
}
