//! The part of the fake metric APIs (tests/support/saas.rs) speaking Amazon CloudWatch's Query API as its API
//! reference documents it: a form POST with `Action` and `Version`,
//! Signature Version 4 in `Authorization`, answers in XML
//! (`GetMetricDataResponse`, `ListMetricsResponse`, `ErrorResponse` with
//! `SignatureDoesNotMatch`, `InvalidClientTokenId`, `InvalidParameterValue`).
//!
//! The signature is checked here by the steps of AWS's Signature Version 4
//! documentation (canonical request, string to sign, derived key), written
//! out independently of the signer backstop uses. A query is recorded with
//! its period (`… period=10`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::saas::{Shared, points_of};

pub const KEY_ID: &str = "AKIDBACKSTOPTEST0001";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYbackstopKEY";
pub const REGION: &str = "eu-west-1";

fn hmac(key: &[u8], text: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(text.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `Ok(())` when `Authorization` is a valid SigV4 signature of this POST to
/// `path` by [`KEY_ID`]/[`SECRET`] for `service` in [`REGION`]; the AWS error code otherwise.
fn verify(headers: &HeaderMap, body: &[u8], (path, service): (&str, &str)) -> Result<(), &'static str> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let auth = h("authorization");
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("IncompleteSignature")?;
    let field = |name: &str| {
        rest.split(", ").find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_string)
    };
    let (credential, signed, signature) = (
        field("Credential").ok_or("IncompleteSignature")?,
        field("SignedHeaders").ok_or("IncompleteSignature")?,
        field("Signature").ok_or("IncompleteSignature")?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, scope_service, "aws4_request"] = scope.as_slice() else {
        return Err("IncompleteSignature");
    };
    if *key_id != KEY_ID {
        return Err("InvalidClientTokenId");
    }
    if *region != REGION || *scope_service != service {
        return Err("SignatureDoesNotMatch");
    }
    let amz_date = h("x-amz-date");
    let canonical_headers: String = signed
        .split(';')
        .map(|name| format!("{name}:{}\n", h(name).split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    for needed in ["host", "x-amz-date"] {
        if !signed.split(';').any(|s| s == needed) {
            return Err("SignatureDoesNotMatch");
        }
    }
    let canonical = format!("POST\n{path}\n\n{canonical_headers}\n{signed}\n{}", hex_sha256(body));
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let key = [service, "aws4_request"]
        .iter()
        .fold(hmac(&hmac(format!("AWS4{SECRET}").as_bytes(), date), region), |k, part| hmac(&k, part));
    if hex::encode(hmac(&key, &to_sign)) != signature {
        return Err("SignatureDoesNotMatch");
    }
    Ok(())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
    let xml = format!(
        r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>00000000-0000-0000-0000-000000000001</RequestId></ErrorResponse>"#
    );
    (status, [("content-type", "text/xml")], xml).into_response()
}

fn seconds(iso: &str) -> Option<i64> {
    iso.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// A session token the request carries must be one the fake STS or metadata
/// service gave out (it is recorded); the refusal when it is not.
fn session_token_known(data: &mut super::saas::Data, headers: &HeaderMap) -> Option<Response> {
    let token = headers.get("x-amz-security-token").and_then(|v| v.to_str().ok())?;
    if !data.issued.iter().any(|t| t == token) {
        let message = "The security token included in the request is invalid.";
        return Some(error(StatusCode::FORBIDDEN, "InvalidClientTokenId", message));
    }
    data.signed_with.push(token.to_string());
    None
}

pub async fn query_api(State(data): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut data = data.lock().unwrap();
    if data.down {
        return error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Service is unavailable");
    }
    if let Err(code) = verify(&headers, &body, ("/", "monitoring")) {
        return error(
            StatusCode::FORBIDDEN,
            code,
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if let Some(refused) = session_token_known(&mut data, &headers) {
        return refused;
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let meta = "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000002</RequestId></ResponseMetadata>";
    match (form.get("Action").map(String::as_str), form.get("Version").map(String::as_str)) {
        (Some("ListMetrics"), Some("2010-08-01")) => {
            let xml = format!(
                r#"<ListMetricsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><ListMetricsResult><Metrics/></ListMetricsResult>{meta}</ListMetricsResponse>"#
            );
            ([("content-type", "text/xml")], xml).into_response()
        }
        (Some("GetMetricData"), Some("2010-08-01")) => {
            let q = "MetricDataQueries.member.1";
            let get = |k: &str| form.get(k).cloned().unwrap_or_default();
            let (expr, period) =
                (get(&format!("{q}.Expression")), get(&format!("{q}.Period")).parse::<u32>().unwrap_or(0));
            let (Some(from), Some(to)) = (seconds(&get("StartTime")), seconds(&get("EndTime"))) else {
                return error(StatusCode::BAD_REQUEST, "MissingParameter", "The parameter StartTime is required.");
            };
            if period == 0 || !(expr.starts_with("SELECT ") || expr.starts_with("SEARCH(")) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    &format!("Error in expression 'backstop': Unrecognized token {expr:?}"),
                );
            }
            data.asked.push((format!("{expr} period={period}"), from, to));
            // CloudWatch leaves out periods without data, and its range ends before EndTime.
            let found = points_of(&data, &expr, from, to - 1).unwrap_or_default();
            let points: Vec<(i64, f64)> = found.into_iter().filter_map(|(t, v)| Some((t, v?))).collect();
            let stamps: String = points
                .iter()
                .map(|(t, _)| format!("<member>{}</member>", jiff::Timestamp::from_second(*t).unwrap()))
                .collect();
            let values: String = points.iter().map(|(_, v)| format!("<member>{v}</member>")).collect();
            let xml = format!(
                r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults><member><Timestamps>{stamps}</Timestamps><Values>{values}</Values><Label>backstop</Label><Id>backstop</Id><StatusCode>Complete</StatusCode></member></MetricDataResults><Messages/></GetMetricDataResult>{meta}</GetMetricDataResponse>"#
            );
            ([("content-type", "text/xml")], xml).into_response()
        }
        _ => error(StatusCode::BAD_REQUEST, "InvalidAction", "The action or operation requested is invalid."),
    }
}

/// The role a web identity may assume, and the token that proves it.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/backstop-reader";
pub const WEB_IDENTITY_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJhY2tzdG9wIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YmFja3N0b3AifQ.c2ln";
/// How long the metadata service's credentials last (s): inside backstop's
/// five-minute renewal margin, so each use fetches them again.
pub const IMDS_LIFETIME_S: i64 = 200;
const IMDS_SESSION: &str = "AQAEAFakeImdsSessionToken==";

fn now_iso(plus_s: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + plus_s).unwrap().to_string()
}

/// STS `AssumeRoleWithWebIdentity` (unsigned) and `AssumeRole` (signed) as
/// their API reference documents them (a form POST; the answers' shapes are
/// the reference's examples).
pub async fn sts(State(data): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("Action") == "AssumeRole" {
        return assume_role(&data, &headers, &body, &form);
    }
    if (get("Action"), get("Version")) != ("AssumeRoleWithWebIdentity", "2011-06-15")
        || get("RoleSessionName").is_empty()
    {
        return error(StatusCode::BAD_REQUEST, "InvalidAction", "Could not find operation");
    }
    if get("RoleArn") != ROLE_ARN || get("WebIdentityToken") != WEB_IDENTITY_TOKEN {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            "The web identity token that was passed could not be validated by AWS.",
        );
    }
    let token = issue(&mut data.lock().unwrap(), "Sts");
    let xml = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:backstop:backstop</SubjectFromWebIdentityToken><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/backstop-reader/{session}</Arn><AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId></AssumedRoleUser><Credentials><SessionToken>{token}</SessionToken><SecretAccessKey>{SECRET}</SecretAccessKey><Expiration>{expires}</Expiration><AccessKeyId>{KEY_ID}</AccessKeyId></Credentials><Audience>sts.amazonaws.com</Audience></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>"#,
        session = get("RoleSessionName"),
        expires = now_iso(3600),
    );
    ([("content-type", "text/xml")], xml).into_response()
}

/// A session token for credentials `kind` hands out (counted as an STS
/// exchange), recorded so CloudWatch accepts it.
fn issue(data: &mut super::saas::Data, kind: &str) -> String {
    data.fetched.0 += 1;
    let token = format!("FwoGZXIvYXdzEBackstop{kind}{}", data.fetched.0);
    data.issued.push(token.clone());
    token
}

/// The external id the role's trust policy asks for.
pub const EXTERNAL_ID: &str = "backstop-external-id";

/// `AssumeRole`: signed (service `sts`) with [`KEY_ID`]/[`SECRET`] (and, if
/// it carries one, a session token this fake gave out), for [`ROLE_ARN`] with [`EXTERNAL_ID`].
fn assume_role(data: &Shared, headers: &HeaderMap, body: &[u8], form: &HashMap<String, String>) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if let Err(code) = verify(headers, body, ("/sts/", "sts")) {
        return error(StatusCode::FORBIDDEN, code, "The request signature we calculated does not match.");
    }
    let mut data = data.lock().unwrap();
    if let Some(refused) = session_token_known(&mut data, headers) {
        return refused;
    }
    if get("Version") != "2011-06-15" || get("RoleArn") != ROLE_ARN || get("ExternalId") != EXTERNAL_ID {
        return error(StatusCode::FORBIDDEN, "AccessDenied", "User is not authorized to perform: sts:AssumeRole");
    }
    let token = issue(&mut data, "StsRole");
    let xml = format!(
        r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/backstop-reader/{session}</Arn><AssumedRoleId>ARO123EXAMPLE123:{session}</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>{KEY_ID}</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>{token}</SessionToken><Expiration>{expires}</Expiration></Credentials><PackedPolicySize>6</PackedPolicySize></AssumeRoleResult><ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata></AssumeRoleResponse>"#,
        session = get("RoleSessionName"),
        expires = now_iso(3600),
    );
    ([("content-type", "text/xml")], xml).into_response()
}

/// The access token `aws sso login` would have cached.
pub const SSO_TOKEN: &str = "aoaAAAAAGWxBackstopSsoAccessToken";

/// IAM Identity Center's `GetRoleCredentials` as the portal API reference
/// documents it: `GET /federation/credentials?account_id&role_name` with the
/// token in `x-amz-sso_bearer_token`; 401 `UnauthorizedException` for another token.
pub async fn sso_role_credentials(
    State(data): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = headers.get("x-amz-sso_bearer_token").and_then(|v| v.to_str().ok());
    if token != Some(SSO_TOKEN) {
        let body = r#"{"message":"Session token not found or invalid"}"#;
        return (StatusCode::UNAUTHORIZED, [("x-amzn-errortype", "UnauthorizedException")], body).into_response();
    }
    if q.get("account_id").map(String::as_str) != Some("123456789012") || !q.contains_key("role_name") {
        let body = r#"{"message":"No access"}"#;
        return (StatusCode::FORBIDDEN, [("x-amzn-errortype", "ForbiddenException")], body).into_response();
    }
    let token = issue(&mut data.lock().unwrap(), "Sso");
    let expires_ms = (jiff::Timestamp::now().as_second() + 3600) * 1000;
    let body = serde_json::json!({"roleCredentials": {"accessKeyId": KEY_ID, "secretAccessKey": SECRET, "sessionToken": token, "expiration": expires_ms}});
    axum::Json(body).into_response()
}

/// The client registration `aws sso login` cached beside the token, and the refresh token.
pub const SSO_CLIENT: (&str, &str, &str) = ("backstopClientId", "backstopClientSecret", "backstopRefreshToken");

/// SSO-OIDC `CreateToken` as its API reference documents it (a JSON POST to
/// `/token`): the `refresh_token` grant with [`SSO_CLIENT`] gives [`SSO_TOKEN`]
/// for an hour; anything else is `invalid_grant` (400).
pub async fn sso_oidc_token(State(data): State<Shared>, body: Bytes) -> Response {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let got = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (id, secret, refresh) = SSO_CLIENT;
    let asked = (got("clientId"), got("clientSecret"), got("grantType"), got("refreshToken"));
    if asked != (id.into(), secret.into(), "refresh_token".into(), refresh.into()) {
        let body = r#"{"error":"invalid_grant","error_description":"Invalid refresh token provided"}"#;
        return (StatusCode::BAD_REQUEST, [("x-amzn-errortype", "InvalidGrantException")], body).into_response();
    }
    data.lock().unwrap().fetched.0 += 1;
    let answer = serde_json::json!({"accessToken": SSO_TOKEN, "expiresIn": 3600, "refreshToken": refresh, "tokenType": "Bearer"});
    axum::Json(answer).into_response()
}

/// The token EKS Pod Identity's agent expects in `Authorization`.
pub const CONTAINER_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.backstop-pod-identity.c2ln";

/// The container credentials endpoint (EKS Pod Identity's agent, ECS's):
/// the credentials document for the caller whose `Authorization` is [`CONTAINER_TOKEN`].
pub async fn container_credentials(State(data): State<Shared>, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(CONTAINER_TOKEN) {
        return (StatusCode::UNAUTHORIZED, "invalid authorization token").into_response();
    }
    let mut data = data.lock().unwrap();
    data.fetched.1 += 1;
    let token = format!("FwoGZXIvYXdzEBackstopContainer{}", data.fetched.1);
    data.issued.push(token.clone());
    let doc = serde_json::json!({"AccessKeyId": KEY_ID, "SecretAccessKey": SECRET, "Token": token, "AccountId": "123456789012", "Expiration": now_iso(3600)});
    axum::Json(doc).into_response()
}

/// IMDSv2's session token: `PUT /latest/api/token` with the TTL header.
pub async fn imds_token(headers: HeaderMap) -> Response {
    match headers.get("x-aws-ec2-metadata-token-ttl-seconds").and_then(|v| v.to_str().ok()?.parse::<u32>().ok()) {
        Some(1..=21600) => IMDS_SESSION.into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn imds_session_ok(headers: &HeaderMap) -> bool {
    headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) == Some(IMDS_SESSION)
}

/// The instance profile's role name (401 without the session token, as IMDSv2 answers).
pub async fn imds_role(headers: HeaderMap) -> Response {
    if !imds_session_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    "backstop-node-role".into_response()
}

/// The role's credentials document, in the field set EC2's documentation shows.
pub async fn imds_credentials(
    State(data): State<Shared>,
    axum::extract::Path(role): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if !imds_session_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if role != "backstop-node-role" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut data = data.lock().unwrap();
    if data.imds_fails_after.is_some_and(|n| data.fetched.1 >= n) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    data.fetched.1 += 1;
    let token = format!("IQoJb3JpZ2luX2VjEBackstopImds{}", data.fetched.1);
    data.issued.push(token.clone());
    axum::Json(serde_json::json!({
        "Code": "Success",
        "LastUpdated": now_iso(0),
        "Type": "AWS-HMAC",
        "AccessKeyId": KEY_ID,
        "SecretAccessKey": SECRET,
        "Token": token,
        "Expiration": now_iso(IMDS_LIFETIME_S),
    }))
    .into_response()
}
