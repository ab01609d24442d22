//! The demo organizations and keys the local run and the README use. These keys exist only here.

use std::collections::BTreeSet;

use crate::state::{now_rfc3339, Group, Key, Org, Sim, Workspace, ALL_SCOPES};

pub const DAINESE_ORG_ID: &str = "12345678-1234-5678-1234-567812345678";
pub const NO_ZR_ORG_ID: &str = "87654321-4321-8765-4321-876543218765";
pub const UNKNOWN_ZR_ORG_ID: &str = "11111111-2222-3333-4444-555555555555";

/// All four scopes, Dainese's organization (zero-retention on).
pub const GOOD_KEY: &str = "sk-ant-admin01-demo-dainese-good-0000000000000000000000GOOD";
/// A second good key for the same organization, to show rotation.
pub const ROTATED_KEY: &str = "sk-ant-admin01-demo-dainese-rotated-000000000000000000ROTA";
/// Every scope but `Audit:read`.
pub const NO_AUDIT_KEY: &str = "sk-ant-admin01-demo-dainese-noaudit-0000000000000000NOAUD";
/// All scopes, in an organization with zero-retention off.
pub const NO_ZR_KEY: &str = "sk-ant-admin01-demo-nozr-000000000000000000000000000NOZR";
/// All scopes, in an organization whose `/organizations/me` omits `zero_retention`.
pub const UNKNOWN_ZR_KEY: &str = "sk-ant-admin01-demo-unknownzr-0000000000000000000000UNKZ";
/// Well-formed but unknown to Anthropic: answers 401.
pub const REVOKED_KEY: &str = "sk-ant-admin01-demo-revoked-00000000000000000000000REVOK";

pub const ENTERPRISE_ORG_ID: &str = "22222222-3333-4444-5555-666666666666";
/// A Claude Enterprise key of the demo enterprise org (Ducati Motor Holding) with the connector's five
/// scopes.
pub const ENTERPRISE_KEY: &str = "sk-ant-api01-demo-ducati-enterprise-00000000000000000ENTR";
/// The same org, without `read:compliance_activities` and `read:analytics`.
pub const ENTERPRISE_PARTIAL_KEY: &str = "sk-ant-api01-demo-ducati-partial-0000000000000000000PART";
/// The five scopes the connector needs of an Enterprise key.
pub const CONNECTOR_ENTERPRISE_SCOPES: [&str; 5] = [
    "write:plugins",
    "read:plugins",
    "read:analytics",
    "read:compliance_activities",
    "read:rbac_groups",
];
pub const GROUP_ENGINEERING: &str = "rbac_group_01DemoEngineering000000000";
pub const GROUP_PRODUCT: &str = "rbac_group_01DemoProduct00000000000000";
pub const GROUP_SALES: &str = "rbac_group_01DemoSales0000000000000000";

pub const WS_ENGINEERING: &str = "wrkspc_01DemoEngineering000000000";
pub const WS_CORPORATE: &str = "wrkspc_01DemoCorporate0000000000";
pub const WS_SALES: &str = "wrkspc_01DemoSales00000000000000";
pub const WS_LEGACY: &str = "wrkspc_01DemoLegacyArchived00000";

fn ws(id: &str, name: &str, member: bool, archived: bool) -> Workspace {
    let now = now_rfc3339();
    Workspace {
        id: id.into(),
        name: name.into(),
        created_at: now.clone(),
        archived_at: archived.then_some(now),
        display_color: "#6C5BB9".into(),
        principal_member: member,
    }
}

fn org(id: &str, name: &str, zero_retention: Option<bool>, workspaces: Vec<Workspace>) -> Org {
    Org {
        id: id.into(),
        name: name.into(),
        zero_retention,
        workspaces,
        groups: vec![],
        skills: vec![],
        audit: vec![],
        audit_expired_through: None,
        latency: std::time::Duration::ZERO,
        fail_status: None,
        audit_page_cap: None,
        enterprise: None,
    }
}

fn key(org_id: &str, scopes: &[&str]) -> Key {
    Key {
        org_id: org_id.into(),
        scopes: scopes
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        revoked: false,
        api_key_id: crate::ids::api_key_id(),
    }
}

/// Seeds the demo data: Dainese (3 live workspaces, the key's principal missing from `dainese-sales`, one
/// archived), an org with zero-retention off, one that does not report it, and the demo keys.
pub fn seed(sim: &Sim) {
    let mut st = sim.lock();
    let mut dainese = org(
        DAINESE_ORG_ID,
        "Dainese S.p.A.",
        Some(true),
        vec![
            ws(WS_ENGINEERING, "dainese-engineering", true, false),
            ws(WS_CORPORATE, "dainese-corporate", true, false),
            ws(WS_SALES, "dainese-sales", false, false),
            ws(WS_LEGACY, "dainese-legacy", true, true),
        ],
    );
    dainese.groups = vec![
        Group {
            id: "grp_engineering".into(),
            name: "Engineering".into(),
        },
        Group {
            id: "grp_product".into(),
            name: "Product".into(),
        },
    ];
    st.orgs.insert(DAINESE_ORG_ID.into(), dainese);
    st.orgs.insert(
        NO_ZR_ORG_ID.into(),
        org(
            NO_ZR_ORG_ID,
            "Retention Off Ltd",
            Some(false),
            vec![ws(
                "wrkspc_01DemoNoZrDefault00000000",
                "default",
                true,
                false,
            )],
        ),
    );
    st.orgs.insert(
        UNKNOWN_ZR_ORG_ID.into(),
        org(UNKNOWN_ZR_ORG_ID, "Quiet Org GmbH", None, vec![]),
    );
    st.keys
        .insert(GOOD_KEY.into(), key(DAINESE_ORG_ID, &ALL_SCOPES));
    st.keys
        .insert(ROTATED_KEY.into(), key(DAINESE_ORG_ID, &ALL_SCOPES));
    st.keys.insert(
        NO_AUDIT_KEY.into(),
        key(
            DAINESE_ORG_ID,
            &["Skills:write", "Skills:read", "Workspaces:read"],
        ),
    );
    st.keys
        .insert(NO_ZR_KEY.into(), key(NO_ZR_ORG_ID, &ALL_SCOPES));
    st.keys
        .insert(UNKNOWN_ZR_KEY.into(), key(UNKNOWN_ZR_ORG_ID, &ALL_SCOPES));

    // The demo Claude Enterprise org: three RBAC groups, the documented limits.
    let mut enterprise = crate::enterprise::Enterprise::new(60.0, 300.0);
    for (id, name) in [
        (GROUP_ENGINEERING, "Engineering"),
        (GROUP_PRODUCT, "Product"),
        (GROUP_SALES, "Sales"),
    ] {
        enterprise.groups.push(crate::enterprise::RbacGroup {
            id: id.into(),
            name: name.into(),
            created_at: now_rfc3339(),
        });
    }
    let mut ent_org = org(ENTERPRISE_ORG_ID, "Ducati Motor Holding", None, vec![]);
    ent_org.enterprise = Some(enterprise);
    st.orgs.insert(ENTERPRISE_ORG_ID.into(), ent_org);
    st.keys.insert(
        ENTERPRISE_KEY.into(),
        key(ENTERPRISE_ORG_ID, &CONNECTOR_ENTERPRISE_SCOPES),
    );
    st.keys.insert(
        ENTERPRISE_PARTIAL_KEY.into(),
        key(
            ENTERPRISE_ORG_ID,
            &["write:plugins", "read:plugins", "read:rbac_groups"],
        ),
    );
}
