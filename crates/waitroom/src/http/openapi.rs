//! `GET /api/waiting-room/openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! annotations and the body types.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::header;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{api, challenge, console, ops, page, passes, problem, rooms, sessions};

#[derive(OpenApi)]
#[openapi(
    info(title = "waitroom", description = "A virtual waiting room for ticket on-sales. Every endpoint, with examples: docs/api.md in the repository."),
    paths(
        sessions::join, sessions::get_session, sessions::leave, sessions::heartbeat,
        sessions::complete, sessions::evict,
        rooms::put, rooms::get, rooms::list, rooms::close, passes::issue, challenge::issue,
        ops::healthz, ops::readyz, ops::metrics, ops::jwks, page::room_page,
        console::console_page,
    ),
    components(schemas(
        api::JoinRequest, api::SessionBody, api::WaitRangeBody, api::StatusBody, api::ExpiredReasonBody,
        api::RoomConfigBody, api::RoomBody, api::RoomStatsBody, api::ExpiredTotalBody,
        api::RoomListBody, api::QueueingMethodBody, api::EventBody, problem::ProblemBody,
        passes::IssuePassesRequest, passes::PassesBody, challenge::ChallengeBody,
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme("adminToken", bearer("The admin token (--admin-token)"));
        components.add_security_scheme(
            "admissionToken",
            bearer("The session's admissionToken (an EdDSA JWT)"),
        );
    }
}

/// The document, rendered once.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".into())
    })
}

pub(crate) async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use waitroom_core::limits as core;

    fn document() -> Value {
        serde_json::from_str(super::json()).unwrap()
    }

    /// Every error body is a problem, served and documented as `application/problem+json`, and
    /// every operation documents the `405` (with `Allow`) that any other method gets.
    #[test]
    fn errors_are_problems_and_every_operation_has_its_405() {
        let document = document();
        let problem = "#/components/schemas/ProblemBody";
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                for (status, response) in responses {
                    for (media_type, content) in
                        response["content"].as_object().into_iter().flatten()
                    {
                        let is_problem = content["schema"]["$ref"] == problem;
                        assert_eq!(
                            is_problem,
                            media_type == super::problem::PROBLEM_JSON,
                            "{method} {path} {status}: {media_type}"
                        );
                    }
                }
                let not_allowed = &responses["405"];
                assert!(
                    not_allowed["headers"]["Allow"].is_object(),
                    "{method} {path}: no 405 with Allow"
                );
            }
        }
    }

    /// The document's ranges are the code's limits.
    #[test]
    fn ranges_are_the_limits() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        let config = &schemas["RoomConfigBody"]["properties"];
        let range = |field: &str| {
            let schema = &config[field];
            (schema["minimum"].as_u64(), schema["maximum"].as_u64())
        };
        assert_eq!(
            range("capacity"),
            (Some(1), Some(core::CAPACITY_MAX.into()))
        );
        assert_eq!(
            range("admitPerMinute"),
            (Some(1), Some(core::ADMIT_PER_MINUTE_MAX.into()))
        );
        assert_eq!(
            range("maxWaiting"),
            (Some(1), Some(core::MAX_WAITING_MAX.into()))
        );
        for field in [
            "activeIdleTimeoutSeconds",
            "maxActiveSeconds",
            "waitingIdleTimeoutSeconds",
            "heartbeatIntervalSeconds",
        ] {
            assert_eq!(
                range(field),
                (Some(1), Some(core::SETTING_SECONDS_MAX.into())),
                "{field}"
            );
        }
        assert_eq!(
            (
                config["challengeDifficultyBits"]["minimum"].as_u64(),
                config["challengeDifficultyBits"]["maximum"].as_u64()
            ),
            (Some(0), Some(core::CHALLENGE_DIFFICULTY_BITS_MAX.into()))
        );
        let challenge = &schemas["ChallengeBody"]["properties"];
        assert_eq!(
            challenge["difficultyBits"]["maximum"].as_u64(),
            Some(core::CHALLENGE_DIFFICULTY_BITS_MAX.into())
        );
        assert_eq!(
            challenge["challenge"]["maxLength"].as_u64(),
            Some(crate::challenge::CHALLENGE_CHARS as u64)
        );
        let join = &schemas["JoinRequest"]["properties"];
        assert_eq!(
            join["solution"]["maxLength"].as_u64(),
            Some(crate::challenge::SOLUTION_CHARS_MAX as u64)
        );
        // The queueing methods: the five, `fifo` the default.
        assert_eq!(
            schemas["QueueingMethodBody"]["enum"],
            serde_json::json!(["fifo", "random", "passthrough", "reject", "inviteOnly"])
        );
        assert_eq!(
            config["queueingMethod"]["$ref"],
            "#/components/schemas/QueueingMethodBody"
        );
        assert_eq!(
            waitroom_core::QueueingMethod::ALL.map(|m| m.as_str()),
            ["fifo", "random", "passthrough", "reject", "inviteOnly"]
        );
        // Events: their count and each setting's range.
        assert_eq!(
            config["events"]["maxItems"].as_u64(),
            Some(core::EVENTS_PER_ROOM_MAX as u64)
        );
        let event = &schemas["EventBody"]["properties"];
        let event_range = |field: &str| {
            (
                event[field]["minimum"].as_u64(),
                event[field]["maximum"].as_u64(),
            )
        };
        assert_eq!(
            event_range("capacity"),
            (Some(1), Some(core::CAPACITY_MAX.into()))
        );
        assert_eq!(
            event_range("admitPerMinute"),
            (Some(1), Some(core::ADMIT_PER_MINUTE_MAX.into()))
        );
        assert_eq!(
            event_range("preQueueMinutes"),
            (Some(1), Some(core::EVENT_PRE_QUEUE_MINUTES_MAX.into()))
        );
        assert_eq!(
            event["name"]["maxLength"].as_u64(),
            Some(core::EVENT_NAME_BYTES_MAX as u64)
        );
        let max_length = |schema: &Value| schema["maxLength"].as_u64().map(|n| n as usize);
        assert_eq!(
            max_length(&config["targetUrl"]),
            Some(core::TARGET_URL_BYTES_MAX)
        );
        assert_eq!(
            max_length(&schemas["JoinRequest"]["properties"]["roomId"]),
            Some(core::ROOM_ID_BYTES_MAX)
        );
        let paths = &document["paths"];
        let parameter = |path: &str, method: &str, name: &str| {
            paths[path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["schema"].clone())
                .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
        };
        assert_eq!(
            max_length(&parameter(
                "/api/waiting-room/rooms/{roomId}",
                "put",
                "roomId"
            )),
            Some(core::ROOM_ID_BYTES_MAX)
        );
        assert_eq!(
            max_length(&parameter("/api/waiting-room/sessions/{id}", "get", "id")),
            Some(crate::limits::PATH_ID_BYTES_MAX)
        );
        assert_eq!(
            max_length(&parameter(
                "/api/waiting-room/sessions",
                "post",
                "Idempotency-Key"
            )),
            Some(core::IDEMPOTENCY_KEY_BYTES_MAX)
        );
    }
}
