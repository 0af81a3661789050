//! The bytes behind an OpenAI `image_url` content part
//! (`{"type": "image_url", "image_url": {"url": "..."}}`), and likewise vLLM's `audio_url` and
//! `video_url` parts and OpenAI's `input_audio` (taken as a data URL), fetched under a
//! [`MediaPolicy`].
//!
//! [`fetch_media`] accepts four kinds of source:
//!
//! - `data:<mime>;base64,<data>`: decoded in memory. The MIME type must be `image/*`; the
//!   limit applies to the decoded length (an oversized payload is refused before decoding).
//! - a plain path or a `file://` URL: read only when the server was started with a media
//!   directory ([`MediaPolicy::media_dir`], `ingot api --media-dir DIR`). Relative paths are
//!   taken inside that directory.
//! - `http://` and `https://`: fetched only with [`MediaPolicy::allow_remote`]
//!   (`ingot api --allow-remote-media`).
//! - anything else is a 400 naming the supported kinds.
//!
//! Every failure is a [`MediaSourceError`] whose [`status`](MediaSourceError::status) is
//! the HTTP answer (400 bad source, 403 refused by the policy, 413 over the size limit, 502
//! the remote server failed, 504 timeout); its message names the URL (long URLs, such as
//! data URLs, are shortened).
//!
//! # Security invariants
//!
//! A request's URL comes from an untrusted client, and the server may run next to services
//! that trust it (cloud metadata endpoints, admin ports on loopback, a private network), so:
//!
//! - **Local files** are read only when the path, with every symlink and `..` resolved
//!   (`canonicalize`), lies inside the canonical media directory. A path that does not exist
//!   is a 400 only when it is lexically inside the directory; outside, it is the same 403 as
//!   an existing file, so clients cannot probe which files exist elsewhere. Messages name the
//!   path as the client gave it and the directory, never a symlink's target. Only regular
//!   files are read (not FIFOs or devices). The directory itself is trusted: whoever can
//!   write symlinks into it between the check and the open could swap them.
//! - **Remote URLs**: the host is resolved once, and the fetch is refused (403) if *any* of
//!   its addresses is loopback, private (10/8, 172.16/12, 192.168/16), link-local
//!   (169.254/16, fe80::/10), unique-local (fc00::/7), unspecified (0/8, ::), multicast,
//!   broadcast, shared CGNAT space (100.64/10), reserved (240/4), deprecated site-local
//!   (fec0::/10), or one of these written as IPv6 (IPv4-mapped `::ffff:a.b.c.d`,
//!   IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`); see [`address_class`].
//!   The connection then goes to exactly the vetted address (ureq is given a resolver that
//!   answers only that address), so a DNS answer that changes between the check and the
//!   connect (DNS rebinding) cannot redirect it. TLS still verifies the certificate against
//!   the URL's host name (webpki roots). Environment proxies are ignored (a proxy would make
//!   the connection, unvetted).
//! - **Redirects** are followed by this module, not by the HTTP client: at most
//!   [`MAX_REDIRECTS`] hops, each only to `http(s)`, and each new host is resolved and vetted
//!   exactly like the first.
//! - **Size and time**: the body is streamed and reading stops as soon as it exceeds
//!   [`MediaPolicy::max_bytes`] (a larger `Content-Length` is refused before reading); the
//!   whole fetch, name resolution and redirects included, is bounded by
//!   [`MediaPolicy::timeout`], both inside the HTTP client and around the blocking task.
//!
//! # Why ureq
//!
//! The workspace already uses ureq 3 (blocking, small, no async runtime of its own); its
//! pluggable `Resolver` is what pins the connection to the vetted address, and its
//! `rustls` feature (ring, webpki roots; no OpenSSL, no system certificate store) adds about
//! a minute to a cold build. Being blocking, it runs under `tokio::task::spawn_blocking`, so
//! the async runtime never waits on the network. An async client (reqwest) would pull in
//! hyper's client stack and a second TLS configuration for the same job.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::engine::general_purpose::{GeneralPurpose, PAD_INDIFFERENT};
use base64::Engine as _;

/// [`MediaPolicy::max_bytes`] by default: 20 MiB.
pub const DEFAULT_MAX_MEDIA_BYTES: usize = 20 << 20;
/// [`MediaPolicy::timeout`] by default.
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirect hops a remote fetch follows (each one vetted) before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// URLs longer than this many characters are shortened in messages.
const SHOWN_CHARS: usize = 80;

/// Standard base64, padding optional (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, PAD_INDIFFERENT);

/// Where media may come from, and how much of it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPolicy {
    /// Local files may be named (as a plain path or `file://` URL) only inside this directory
    /// (canonicalised; symlinks and `..` must not escape it). `None`: local paths are refused.
    pub media_dir: Option<PathBuf>,
    /// Whether `http(s)` URLs may be fetched.
    pub allow_remote: bool,
    /// Largest accepted media, in bytes (decoded, for data URLs).
    pub max_bytes: usize,
    /// Time limit of one whole fetch (resolution, redirects and body).
    pub timeout: Duration,
    /// Longest accepted audio clip, in seconds (`--max-audio-seconds`).
    pub max_audio_seconds: f64,
    /// Which frames of a video file are kept (`--video-fps`, `--video-maxlen`).
    pub video_sampling: ingot_core::media::FrameSampling,
}

impl Default for MediaPolicy {
    /// Data URLs only: no local files, no remote URLs, 20 MiB, 10 s, 30 s of audio, video frames
    /// at LLaMA Factory's 2 per second, at most 128.
    fn default() -> Self {
        Self {
            media_dir: None,
            allow_remote: false,
            max_bytes: DEFAULT_MAX_MEDIA_BYTES,
            timeout: DEFAULT_MEDIA_TIMEOUT,
            max_audio_seconds: ingot_engine::MediaLimits::default().max_audio_seconds,
            video_sampling: ingot_core::media::FrameSampling::default(),
        }
    }
}

/// Why a media source gave no bytes; [`status`](Self::status) is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaSourceError {
    /// 400: malformed, unsupported or missing.
    #[error("{0}")]
    Invalid(String),
    /// 403: refused by the policy.
    #[error("{0}")]
    Forbidden(String),
    /// 413: larger than the policy's limit.
    #[error("{0}")]
    TooLarge(String),
    /// 502: the remote server could not be reached or answered with an error.
    #[error("{0}")]
    Upstream(String),
    /// 504: the fetch took longer than the policy's timeout.
    #[error("{0}")]
    Timeout(String),
    /// 500: the server itself failed (its media directory vanished, a task panicked).
    #[error("{0}")]
    Internal(String),
}

impl MediaSourceError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid(m) | Self::Forbidden(m) | Self::TooLarge(m) | Self::Upstream(m) | Self::Timeout(m) | Self::Internal(m) => m,
        }
    }
}

type Result<T> = std::result::Result<T, MediaSourceError>;
use MediaSourceError::{Forbidden, Internal, Invalid, TooLarge, Upstream};

/// The bytes `url` (an `image_url` part's `url`) names, if `policy` allows them.
pub async fn fetch_media(url: &str, policy: &MediaPolicy) -> Result<Vec<u8>> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Invalid("the image URL is empty".into()));
    }
    match scheme(url) {
        Some(s) if s.eq_ignore_ascii_case("data") => decode_data_url(url, policy.max_bytes),
        Some(s) if s.eq_ignore_ascii_case("file") => {
            let path = file_url_path(url)?;
            read_local(url.to_owned(), path, policy).await
        }
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => fetch_remote(url, policy).await,
        Some(s) => Err(Invalid(format!(
            "unsupported URL scheme `{s}:` in {}; supported: data:image/...;base64,... (or audio/..., video/...), http(s):// (with --allow-remote-media), \
             file:// or a plain path (with --media-dir)",
            shorten(url)
        ))),
        None => read_local(url.to_owned(), PathBuf::from(url), policy).await,
    }
}

/// The URL's scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`, then `:`), if it
/// has one. A single letter is a Windows drive, not a scheme.
fn scheme(url: &str) -> Option<&str> {
    let (head, _) = url.split_once(':')?;
    let mut chars = head.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && head.len() > 1;
    valid.then_some(head)
}

/// `url` for a message: long ones (data URLs) cut, with their length.
fn shorten(url: &str) -> Cow<'_, str> {
    let count = url.chars().count();
    if count <= SHOWN_CHARS {
        return Cow::Borrowed(url);
    }
    let head: String = url.chars().take(SHOWN_CHARS - 20).collect();
    Cow::Owned(format!("{head}… ({count} characters)"))
}

// ---------------------------------------------------------------------------------------------
// data: URLs

fn decode_data_url(url: &str, max_bytes: usize) -> Result<Vec<u8>> {
    let shown = shorten(url);
    let rest = &url["data:".len()..];
    let Some((meta, payload)) = rest.split_once(',') else {
        return Err(Invalid(format!("the data URL {shown} has no `,` before its data")));
    };
    let mut params = meta.split(';');
    let mime = params.next().unwrap_or_default().trim();
    let base64 = params.any(|p| p.trim().eq_ignore_ascii_case("base64"));
    let lower = mime.to_ascii_lowercase();
    if !["image/", "audio/", "video/"].iter().any(|m| lower.starts_with(m)) {
        let mime = if mime.is_empty() { "text/plain (none given)" } else { mime };
        return Err(Invalid(format!(
            "the data URL {shown} has MIME type `{mime}`; only images, audio and video (image/*, audio/*, video/*) are accepted"
        )));
    }
    if !base64 {
        return Err(Invalid(format!("the data URL {shown} is not base64-encoded; send data:{mime};base64,<data>")));
    }
    // Line breaks and spaces are tolerated (some encoders wrap lines).
    let payload: Cow<str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(payload.chars().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(payload)
    };
    let too_large = |size: &str| {
        TooLarge(format!(
            "the data URL {shown} decodes to {size} bytes, over the server's media limit of {max_bytes} bytes (ingot api --max-media-mb)"
        ))
    };
    // Every 4 characters are 3 bytes, less at most 2 of padding: refuse before decoding.
    let at_least = (payload.len() / 4 * 3).saturating_sub(2);
    if at_least > max_bytes {
        return Err(too_large(&format!("at least {at_least}")));
    }
    let bytes = BASE64.decode(payload.as_bytes()).map_err(|e| Invalid(format!("the data URL {shown} is not valid base64: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(too_large(&bytes.len().to_string()));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Local files

/// The path of a `file:` URL: `file:///abs/path`, `file://localhost/abs/path` or `file:/abs/path`,
/// percent-decoded.
fn file_url_path(url: &str) -> Result<PathBuf> {
    let rest = &url["file:".len()..];
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(after) => match after.strip_prefix("localhost") {
            Some(p) if p.starts_with('/') => p,
            _ => return Err(Invalid(format!("the file URL {} names a host; use file:///absolute/path", shorten(url)))),
        },
        None if rest.starts_with('/') => rest,
        None => return Err(Invalid(format!("the file URL {} has no absolute path; use file:///absolute/path", shorten(url)))),
    };
    let decoded = percent_decode(path).ok_or_else(|| Invalid(format!("the file URL {} has a bad %-escape", shorten(url))))?;
    Ok(PathBuf::from(decoded))
}

/// `%XX` escapes decoded; `None` if one is malformed, decodes to NUL or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == 0 {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `path` with `.` and `..` resolved lexically (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

async fn read_local(url: String, path: PathBuf, policy: &MediaPolicy) -> Result<Vec<u8>> {
    let Some(dir) = policy.media_dir.clone() else {
        return Err(Forbidden(
            "local media paths are disabled; start the server with --media-dir DIR to allow files inside DIR".into(),
        ));
    };
    let max_bytes = policy.max_bytes;
    within(policy.timeout, url.clone(), move |_| read_local_blocking(&url, &path, &dir, max_bytes)).await
}

fn read_local_blocking(url: &str, path: &Path, dir: &Path, max_bytes: usize) -> Result<Vec<u8>> {
    let shown = shorten(url);
    let real_dir = dir
        .canonicalize()
        .map_err(|e| Internal(format!("the server's media directory {} is not usable: {e}", dir.display())))?;
    let outside = || Forbidden(format!("{shown} is outside the media directory {}", real_dir.display()));
    let joined = if path.is_absolute() { path.to_path_buf() } else { real_dir.join(path) };
    let real = match joined.canonicalize() {
        Ok(real) => real,
        Err(e) => {
            // Outside the directory, a missing file is refused like an existing one.
            let lexical = normalize(&joined);
            let raw_dir = normalize(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
            if !(lexical.starts_with(&real_dir) || lexical.starts_with(&raw_dir)) {
                return Err(outside());
            }
            return Err(match e.kind() {
                ErrorKind::NotFound => Invalid(format!("{shown}: no such file in the media directory {}", real_dir.display())),
                _ => Invalid(format!("{shown}: cannot read it: {e}")),
            });
        }
    };
    if !real.starts_with(&real_dir) {
        return Err(outside());
    }
    let meta = std::fs::metadata(&real).map_err(|e| Invalid(format!("{shown}: cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(Invalid(format!("{shown} is not a regular file")));
    }
    let too_large = |size: u64| {
        TooLarge(format!("{shown} is {size} bytes, over the server's media limit of {max_bytes} bytes (ingot api --max-media-mb)"))
    };
    if meta.len() > max_bytes as u64 {
        return Err(too_large(meta.len()));
    }
    let file = std::fs::File::open(&real).map_err(|e| Invalid(format!("{shown}: cannot read it: {e}")))?;
    // The file may have grown since its size was read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes).map_err(|e| Invalid(format!("{shown}: cannot read it: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Remote URLs

/// Why `ip` may not be fetched from, or `None` for a public address.
pub fn address_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (CGNAT)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    if ip.is_unicast_link_local() {
        return Some("link-local");
    }
    if ip.is_unique_local() {
        return Some("unique-local");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local");
    }
    // IPv4 addresses written as IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
    // (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4);
    }
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(low);
    }
    if s[0] == 0x2002 {
        return v4_class(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// A remote URL's scheme, host (without IPv6 brackets) and port.
struct Target {
    host: String,
    port: u16,
}

fn parse_remote(url: &str) -> Result<Target> {
    let shown = shorten(url);
    let uri: ureq::http::Uri = url.parse().map_err(|e| Invalid(format!("{shown} is not a valid URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(Forbidden(format!("{shown} is not an http(s) URL"))),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| Invalid(format!("{shown} has no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Target { host, port })
}

/// The address to connect to for `target`: refused if any address the host resolves to is
/// not public.
fn resolve_and_vet(url: &str, target: &Target) -> Result<SocketAddr> {
    let shown = shorten(url);
    let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| Upstream(format!("{shown}: cannot resolve {}: {e}", target.host)))?
            .collect(),
    };
    for addr in &addrs {
        if let Some(class) = address_class(addr.ip()) {
            let a = if class == "unspecified" { "an" } else { "a" };
            let named = if target.host == addr.ip().to_string() {
                format!("{} is {a} {class} address", addr.ip())
            } else {
                format!("{} resolves to {}, {a} {class} address", target.host, addr.ip())
            };
            return Err(Forbidden(format!("{shown}: {named}; media URLs may only name public hosts")));
        }
    }
    addrs.first().copied().ok_or_else(|| Upstream(format!("{shown}: {} resolves to no address", target.host)))
}

async fn fetch_remote(url: &str, policy: &MediaPolicy) -> Result<Vec<u8>> {
    if !policy.allow_remote {
        return Err(Forbidden("remote media URLs are disabled; start the server with --allow-remote-media".into()));
    }
    let (owned, max_bytes, timeout) = (url.to_owned(), policy.max_bytes, policy.timeout);
    within(timeout, url.to_owned(), move |deadline| {
        let addr = resolve_and_vet(&owned, &parse_remote(&owned)?)?;
        fetch_blocking(owned, addr, Limits { max_bytes, timeout, deadline })
    })
    .await
}

/// The fetch after vetting: `url`'s first hop goes to `addr` (already vetted), later hops are
/// vetted here. Tests reach the fetch itself through this, with a loopback server as `addr`
/// ([`fetch_remote`] runs the same `fetch_blocking` after vetting).
#[cfg(test)]
async fn fetch_remote_at(url: &str, addr: SocketAddr, policy: &MediaPolicy) -> Result<Vec<u8>> {
    let (owned, max_bytes, timeout) = (url.to_owned(), policy.max_bytes, policy.timeout);
    within(timeout, url.to_owned(), move |deadline| fetch_blocking(owned, addr, Limits { max_bytes, timeout, deadline })).await
}

/// Runs `f` on a blocking thread, giving up (504) after `timeout`; `f` gets the deadline.
async fn within<T: Send + 'static>(
    timeout: Duration,
    url: String,
    f: impl FnOnce(Instant) -> Result<T> + Send + 'static,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || f(deadline))).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(Internal(format!("fetching {}: {e}", shorten(&url)))),
        Err(_) => Err(timed_out(&url, timeout)),
    }
}

fn timed_out(url: &str, timeout: Duration) -> MediaSourceError {
    MediaSourceError::Timeout(format!("fetching {} took longer than the server's limit of {timeout:?}", shorten(url)))
}

/// A remote fetch's limits: bytes, and the policy's timeout with the deadline it set.
#[derive(Clone, Copy)]
struct Limits {
    max_bytes: usize,
    timeout: Duration,
    deadline: Instant,
}

/// One hop's outcome.
enum Hop {
    Body(Vec<u8>),
    Redirect(String),
}

fn fetch_blocking(first_url: String, first_addr: SocketAddr, limits: Limits) -> Result<Vec<u8>> {
    let (mut url, mut addr) = (first_url.clone(), first_addr);
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&url, addr, limits)? {
            Hop::Body(bytes) => return Ok(bytes),
            Hop::Redirect(location) => {
                let next = join_location(&url, &location);
                if !matches!(scheme(&next), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")) {
                    return Err(Forbidden(format!("{} redirects to {}, which is not an http(s) URL", shorten(&url), shorten(&next))));
                }
                addr = resolve_and_vet(&next, &parse_remote(&next)?).map_err(|e| match e {
                    Forbidden(m) => Forbidden(format!("{} redirects to {m}", shorten(&url))),
                    other => other,
                })?;
                url = next;
            }
        }
    }
    Err(Upstream(format!("{} redirects more than {MAX_REDIRECTS} times", shorten(&first_url))))
}

/// A resolver that answers only the vetted address, whatever the name.
#[derive(Debug)]
struct Pinned(SocketAddr);

impl ureq::unversioned::resolver::Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

fn get_once(url: &str, addr: SocketAddr, limits: Limits) -> Result<Hop> {
    let shown = shorten(url);
    let max_bytes = limits.max_bytes;
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(url, limits.timeout));
    }
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(left))
        .user_agent(concat!("ingot/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::new(), Pinned(addr));
    let failed = |e: &dyn std::fmt::Display, timeout: bool| {
        if timeout {
            timed_out(url, limits.timeout)
        } else {
            Upstream(format!("fetching {shown} from {addr}: {e}"))
        }
    };
    let response = agent.get(url).call().map_err(|e| {
        let timeout = matches!(&e, ureq::Error::Timeout(_)) || matches!(&e, ureq::Error::Io(io) if io.kind() == ErrorKind::TimedOut);
        failed(&e, timeout)
    })?;
    let status = response.status();
    if status.is_redirection() {
        let location = response.headers().get(ureq::http::header::LOCATION).and_then(|v| v.to_str().ok());
        return match location {
            Some(l) => Ok(Hop::Redirect(l.trim().to_owned())),
            None => Err(Upstream(format!("{shown} answered HTTP {status} without a Location"))),
        };
    }
    if !status.is_success() {
        return Err(Upstream(format!("{shown} answered HTTP {status}")));
    }
    let too_large = |size: String| {
        TooLarge(format!("{shown} is {size} bytes, over the server's media limit of {max_bytes} bytes (ingot api --max-media-mb)"))
    };
    let length = response.headers().get(ureq::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(length) = length.filter(|&n| n > max_bytes as u64) {
        return Err(too_large(length.to_string()));
    }
    let mut bytes = Vec::with_capacity(length.unwrap_or(0) as usize);
    response
        .into_body()
        .into_reader()
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(&e, e.kind() == ErrorKind::TimedOut))?;
    if bytes.len() > max_bytes {
        return Err(too_large(format!("more than {max_bytes}")));
    }
    Ok(Hop::Body(bytes))
}

/// A redirect's `Location` made absolute against the URL that answered it.
fn join_location(base: &str, location: &str) -> String {
    if scheme(location).is_some() {
        return location.to_owned();
    }
    let (base_scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(net_path) = location.strip_prefix("//") {
        return format!("{base_scheme}://{net_path}");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if location.starts_with('/') {
        return format!("{base_scheme}://{authority}{location}");
    }
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{base_scheme}://{authority}{dir}{location}")
}

#[cfg(test)]
mod tests;
