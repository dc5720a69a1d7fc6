//! `GET /api/waiting-room/openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! annotations and the body types.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::header;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{api, ops, page, problem, rooms, sessions};

#[derive(OpenApi)]
#[openapi(
    info(title = "waitroom", description = "A virtual waiting room for ticket on-sales. Every endpoint, with examples: docs/api.md in the repository."),
    paths(
        sessions::join, sessions::get_session, sessions::leave, sessions::heartbeat,
        sessions::complete, sessions::evict,
        rooms::put, rooms::get, rooms::list, rooms::close,
        ops::healthz, ops::readyz, ops::metrics, ops::jwks, page::room_page,
    ),
    components(schemas(
        api::JoinRequest, api::SessionBody, api::StatusBody, api::ExpiredReasonBody,
        api::RoomConfigBody, api::RoomBody, api::RoomStatsBody, api::ExpiredTotalBody,
        api::RoomListBody, problem::ProblemBody,
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
