//! A hostile or broken STS on 127.0.0.1: plain HTTP/1.1 on a raw socket, so that it can do what
//! no well-behaved server framework would (stall a body after its headers, nest XML without
//! end, answer every page with new UUIDs). Shared by `tests/hostile.rs` and
//! `examples/hostile.rs` (which measures time to fail and peak RSS per case).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // each user takes the cases it needs

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// What the server answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Ignores the page offset: every `soeg` page is full (500 UUIDs), `fresh` of them never
    /// sent before, the rest repeating the first page's; the unit tree and every `list` are
    /// empty (StatusKode 44).
    Looping {
        /// New UUIDs per page.
        fresh: usize,
    },
    /// The unit tree's page holds an element nested `depth` levels deep.
    Deep {
        /// Nesting levels.
        depth: usize,
    },
    /// The unit tree's first page is a valid answer of about `bytes` bytes (units of about
    /// 1 KB); the pages after it are empty, or, with `every`, as large (new units each time).
    Large {
        /// Body size.
        bytes: usize,
        /// Every page, not only the first.
        every: bool,
    },
    /// The unit tree's page sends its headers and the first bytes of its body, then nothing.
    Stall,
    /// The unit tree's page declares an entity expanding to a billion characters.
    Entities,
    /// The unit tree's page is not UTF-8.
    BadUtf8,
    /// A well-formed municipality without units or users: every answer is StatusKode 44.
    Empty,
}

/// A running hostile server.
#[derive(Debug)]
pub struct Hostile {
    /// `http://127.0.0.1:<port>/organisation/`.
    pub base_url: String,
    calls: Arc<AtomicU64>,
}

impl Hostile {
    /// Calls answered (or begun) so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Starts the server on the current runtime.
pub async fn start(behaviour: Behaviour) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = serve(socket, &behaviour, &counter).await;
            });
        }
    });
    Hostile {
        base_url: format!("http://127.0.0.1:{port}/organisation/"),
        calls,
    }
}

/// One request: its path and body.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<(String, String)>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[header_end..]).into_owned();
    Ok(Some((path, body)))
}

async fn serve(
    mut socket: TcpStream,
    behaviour: &Behaviour,
    calls: &AtomicU64,
) -> std::io::Result<()> {
    while let Some((path, body)) = read_request(&mut socket).await? {
        calls.fetch_add(1, Ordering::Relaxed);
        let service = path
            .trim_end_matches('/')
            .trim_end_matches("/6")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let first_page = body.contains("FoersteResultatReference>0<");
        let operation = if body.contains("FremsoegObjekthierarkiInput") && first_page {
            "hierarchy"
        } else if body.contains("FremsoegObjekthierarkiInput") {
            "hierarchy-next"
        } else if body.contains("SoegInput") {
            "soeg"
        } else {
            "list"
        };
        let answer = answer(behaviour, &service, operation);
        match answer {
            Answer::Body(bytes) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
                    bytes.len()
                );
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(&bytes).await?;
            }
            Answer::Stall => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/soap+xml; charset=utf-8\r\ncontent-length: 100000\r\n\r\n";
                socket.write_all(head.as_bytes()).await?;
                socket
                    .write_all(br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>"#)
                    .await?;
                socket.flush().await?;
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            }
        }
    }
    Ok(())
}

enum Answer {
    Body(Vec<u8>),
    Stall,
}

const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";

fn namespace(service: &str) -> String {
    format!("http://stoettesystemerne.dk/organisation/{service}/6/")
}

fn envelope(payload: &str) -> Vec<u8> {
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body>{payload}</s:Body></s:Envelope>"#).into_bytes()
}

fn output(service: &str, element: &str, code: u32, inner: &str) -> String {
    format!(
        r#"<o:{element} xmlns:o="{}"><o:StandardRetur><o:StatusKode>{code}</o:StatusKode><o:FejlbeskedTekst>OK</o:FejlbeskedTekst></o:StandardRetur>{inner}</o:{element}>"#,
        namespace(service)
    )
}

fn empty(service: &str, operation: &str) -> Vec<u8> {
    let element = match operation {
        "hierarchy" | "hierarchy-next" => "FremsoegObjekthierarkiOutput",
        "soeg" => "SoegOutput",
        _ => "ListOutput",
    };
    envelope(&output(service, element, 44, ""))
}

/// The UUIDs of the first page, repeated on every page after it by a `Looping` server with
/// fewer than 500 fresh UUIDs.
fn first_page() -> &'static [Uuid] {
    static FIRST: std::sync::OnceLock<Vec<Uuid>> = std::sync::OnceLock::new();
    FIRST.get_or_init(|| (0..500).map(|_| Uuid::new_v4()).collect())
}

/// One unit of about 1 KB, as the unit tree returns it.
fn unit(id: Uuid) -> String {
    format!(
        r#"<o:FiltreretOejebliksbillede><o:ObjektType><o:UUIDIdentifikator>{id}</o:UUIDIdentifikator></o:ObjektType><o:Registrering><o:Tidspunkt>2020-01-01T00:00:00Z</o:Tidspunkt><o:LivscyklusKode>Opstaaet</o:LivscyklusKode><o:AttributListe><o:Egenskab><o:Virkning><o:FraTidspunkt><o:TidsstempelDatoTid>2020-01-01T00:00:00Z</o:TidsstempelDatoTid></o:FraTidspunkt><o:TilTidspunkt><o:GraenseIndikator>true</o:GraenseIndikator></o:TilTidspunkt></o:Virkning><o:BrugervendtNoegleTekst>enhed-{id}</o:BrugervendtNoegleTekst><o:EnhedNavn>Afdeling for hostile answers and very long names {id}</o:EnhedNavn></o:Egenskab></o:AttributListe><o:TilstandListe><o:Gyldighed><o:Virkning><o:FraTidspunkt><o:TidsstempelDatoTid>2020-01-01T00:00:00Z</o:TidsstempelDatoTid></o:FraTidspunkt><o:TilTidspunkt><o:GraenseIndikator>true</o:GraenseIndikator></o:TilTidspunkt></o:Virkning><o:GyldighedStatusKode>Aktiv</o:GyldighedStatusKode></o:Gyldighed></o:TilstandListe><o:RelationListe></o:RelationListe></o:Registrering></o:FiltreretOejebliksbillede>"#
    )
}

fn answer(behaviour: &Behaviour, service: &str, operation: &str) -> Answer {
    let hierarchy = |inner: &str| {
        envelope(&output(
            service,
            "FremsoegObjekthierarkiOutput",
            20,
            &format!("<o:OrganisationEnheder>{inner}</o:OrganisationEnheder>"),
        ))
    };
    match (behaviour, operation) {
        (Behaviour::Looping { fresh }, "soeg") => {
            let fresh = (*fresh).min(500);
            let mut ids = String::new();
            for id in first_page().iter().take(500 - fresh) {
                ids.push_str(&format!("<o:UUIDIdentifikator>{id}</o:UUIDIdentifikator>"));
            }
            for _ in 0..fresh {
                ids.push_str(&format!(
                    "<o:UUIDIdentifikator>{}</o:UUIDIdentifikator>",
                    Uuid::new_v4()
                ));
            }
            Answer::Body(envelope(&output(
                service,
                "SoegOutput",
                20,
                &format!("<o:IdListe>{ids}</o:IdListe>"),
            )))
        }
        (Behaviour::Deep { depth }, "hierarchy") => {
            let mut inner = String::with_capacity(depth * 8);
            for _ in 0..*depth {
                inner.push_str("<o:a>");
            }
            for _ in 0..*depth {
                inner.push_str("</o:a>");
            }
            Answer::Body(hierarchy(&format!(
                "<o:FiltreretOejebliksbillede>{inner}</o:FiltreretOejebliksbillede>"
            )))
        }
        (Behaviour::Large { bytes, every }, "hierarchy" | "hierarchy-next")
            if *every || operation == "hierarchy" =>
        {
            let mut inner = String::with_capacity(*bytes + 2048);
            while inner.len() < *bytes {
                inner.push_str(&unit(Uuid::new_v4()));
            }
            Answer::Body(hierarchy(&inner))
        }
        (Behaviour::Stall, "hierarchy") => Answer::Stall,
        (Behaviour::Entities, "hierarchy") => {
            let mut doctype =
                String::from(r#"<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY l0 "ha">"#);
            for level in 1..10 {
                let previous = level - 1;
                doctype.push_str(&format!(
                    r#"<!ENTITY l{level} "&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};&l{previous};">"#
                ));
            }
            doctype.push_str("]>");
            let body = String::from_utf8(hierarchy(
                "<o:FiltreretOejebliksbillede><o:ObjektType><o:UUIDIdentifikator>&l9;</o:UUIDIdentifikator></o:ObjektType></o:FiltreretOejebliksbillede>",
            ))
            .unwrap();
            let body = body.replacen(r#"<?xml version="1.0" encoding="UTF-8"?>"#, &doctype, 1);
            Answer::Body(body.into_bytes())
        }
        (Behaviour::BadUtf8, "hierarchy") => {
            let mut body = hierarchy(
                "<o:FiltreretOejebliksbillede><o:ObjektType><o:UUIDIdentifikator>X</o:UUIDIdentifikator></o:ObjektType></o:FiltreretOejebliksbillede>",
            );
            let at = body.iter().position(|b| *b == b'X').unwrap();
            body[at] = 0xff;
            Answer::Body(body)
        }
        _ => Answer::Body(empty(service, operation)),
    }
}
