//! A scripted browser for IdP pages and APIs: a cookie jar over the rig's one-request-per-connection
//! HTTP client ([`super::http`]). Redirects are not followed; callers read [`Page::location`] and go on,
//! which is how a test walks through a login and a device approval step by step.

use std::collections::BTreeMap;

use super::http::http_request;

pub struct Browser {
    addr: String,
    cookies: BTreeMap<String, String>,
}

/// One response. `location` has the browser's own origin stripped, so it can be requested again.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    /// A browser talking to `addr` (`host:port`) only.
    pub fn new(addr: &str) -> Browser {
        Browser { addr: addr.to_string(), cookies: BTreeMap::new() }
    }

    /// A form request (`application/x-www-form-urlencoded`).
    pub fn form(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Result<Page, String> {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        self.request(method, path, "application/x-www-form-urlencoded", body.as_bytes())
    }

    /// A JSON request.
    pub fn json(&mut self, method: &str, path: &str, body: &serde_json::Value) -> Result<Page, String> {
        self.request(method, path, "application/json", body.to_string().as_bytes())
    }

    pub fn request(&mut self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Result<Page, String> {
        let origin = format!("http://{}", self.addr);
        let path = path.strip_prefix(&origin).unwrap_or(path).to_string();
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = vec![("Content-Type", content_type)];
        if !cookie.is_empty() {
            headers.push(("Cookie", cookie.as_str()));
        }
        let r = http_request(&self.addr, method, &path, &headers, body)?;
        for (k, v) in &r.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_string(), value.to_string());
                }
            }
        }
        let location = r.header("location").map(|l| l.strip_prefix(&origin).unwrap_or(l).to_string());
        Ok(Page { status: r.status, location, body: r.body })
    }
}
