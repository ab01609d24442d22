//! Helpers for tests of the `enterprise` surface: the demo Claude Enterprise org with fast limits, an
//! Enterprise connect, and what the simulator holds.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{example, As, TestEnv, ENTERPRISE_ORG_ID};

impl TestEnv {
    /// A test env whose demo enterprise org (and the connector's pacing of it) allows fast runs, and
    /// whose poller reads usage on every tick.
    pub async fn enterprise() -> TestEnv {
        TestEnv::enterprise_with(|_| {}).await
    }

    /// [`TestEnv::enterprise`] with the configuration adjusted further.
    pub async fn enterprise_with(tune: impl FnOnce(&mut claresia_api::Config)) -> TestEnv {
        let env = TestEnv::start_with(|c| {
            c.enterprise_limits.writes_per_minute = 60_000.0;
            c.enterprise_limits.reads_per_minute = 60_000.0;
            c.enterprise_limits.analytics_per_minute = 60_000.0;
            c.usage_poll_interval = std::time::Duration::ZERO;
            tune(c);
        })
        .await;
        env.sim_send(
            "PATCH",
            &format!("/_sim/orgs/{ENTERPRISE_ORG_ID}"),
            json!({"writes_per_minute": 60000, "reads_per_minute": 60000}),
        )
        .await;
        env
    }

    /// [`TestEnv::enterprise`] with `tenant` connected to the demo enterprise org (attested) and the
    /// three example skills in its catalog (nothing granted yet).
    pub async fn enterprise_connected(tenant: &str) -> TestEnv {
        TestEnv::enterprise_connected_with(tenant, |_| {}).await
    }

    pub async fn enterprise_connected_with(
        tenant: &str,
        tune: impl FnOnce(&mut claresia_api::Config),
    ) -> TestEnv {
        let env = TestEnv::enterprise_with(tune).await;
        let (s, b) = env
            .connect_enterprise(tenant, crate::ENTERPRISE_KEY, Some("DPA-1"))
            .await;
        assert_eq!(s, 201, "{b}");
        env.put_example_skills(tenant).await;
        env
    }

    /// `PUT /tenants/{tenant}/connection` with an Enterprise key and, when `attest`, an attestation.
    pub async fn connect_enterprise(
        &self,
        tenant: &str,
        key: &str,
        attest: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({"admin_api_key": key});
        if let Some(r) = attest {
            body["zero_retention_attestation"] = json!({"reference": r});
        }
        self.call(
            As::Tenant(tenant),
            "PUT",
            &format!("/tenants/{tenant}/connection"),
            Some(&body.to_string()),
        )
        .await
    }

    /// The simulator's state of the demo enterprise org.
    pub async fn enterprise_state(&self) -> Value {
        let state = self.sim_get("/_sim/state").await;
        state["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == ENTERPRISE_ORG_ID)
            .unwrap()["enterprise"]
            .clone()
    }

    /// Plugin name → its installation settings (target → preference).
    pub async fn plugin_settings(&self) -> BTreeMap<String, Value> {
        self.enterprise_state().await["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["settings"].clone(),
                )
            })
            .collect()
    }

    /// Writes (non-GET requests) the simulator took on the Plugins API.
    pub async fn enterprise_writes(&self) -> usize {
        self.sim_requests()
            .await
            .iter()
            .filter(|r| {
                r["method"] != "GET" && r["path"].as_str().unwrap_or("").contains("/plugins")
            })
            .count()
    }

    /// The product page's three example skills.
    pub async fn put_example_skills(&self, tenant: &str) {
        for id in ["incident-postmortem", "prd-review", "standup-notes"] {
            let (s, b) = self
                .put_doc(
                    tenant,
                    &format!("/skills/{id}"),
                    &example(&format!("skill-{id}.json")),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }

    pub async fn put_archetype(&self, tenant: &str, name: &str, doc: Value) -> (u16, Value) {
        self.put_doc(tenant, &format!("/archetypes/{name}"), &doc)
            .await
    }

    /// `GET …/installation_settings` requests the simulator received.
    pub async fn settings_reads(&self) -> usize {
        self.sim_requests()
            .await
            .iter()
            .filter(|r| {
                r["method"] == "GET"
                    && r["path"]
                        .as_str()
                        .unwrap_or("")
                        .ends_with("/installation_settings")
            })
            .count()
    }

    /// Requests the simulator received on one route (`"POST /v1/organizations/plugins"`).
    pub async fn route_requests(&self, route: &str) -> u64 {
        self.sim_get("/_sim/state").await["routes"][route]["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    /// `POST /tenants/{tenant}/republish` as the tenant.
    pub async fn republish(&self, tenant: &str) -> (u16, Value) {
        self.call(
            As::Tenant(tenant),
            "POST",
            &format!("/tenants/{tenant}/republish"),
            None,
        )
        .await
    }

    /// A full publish of `hub` as the sweep runs it (20 s).
    pub async fn full_publish(&self, hub: &str) -> claresia_api::publish::PublishReport {
        let hub = claresia_domain::TenantSlug::parse(hub).unwrap();
        self.app
            .publish(
                &hub,
                None,
                claresia_anthropic::Deadline::after(std::time::Duration::from_secs(20)),
            )
            .await
            .unwrap()
    }
}
