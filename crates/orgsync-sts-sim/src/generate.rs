//! Synthetic municipalities by size and seed (docs/sizes.md §4), deterministic, returned as the model's Snapshot.
//!
//! The snapshot is the simulator's truth: it includes ended positions (valid_to in the past),
//! which the simulator serves with their history and a correct client leaves out. Use
//! [`expected_read`] for what a client should return.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{Days, Months, NaiveDate};
use orgsync_model::ids::{Cvr, UnitId, UserId};
use orgsync_model::snapshot::{Position, Snapshot, Unit, UnitContact, UnitKind, User};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// A synthetic profile of docs/sizes.md §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Size {
    /// Læsø: 30 units, 310 users, depth 3.
    Xs,
    /// Fanø/Samsø/Ærø: 60 units, 610 users, depth 4.
    S,
    /// Median (~45k inhabitants): 320 units, 4,900 users, depth 6.
    M,
    /// Viborg/Roskilde: 650 units, 10,200 users, depth 7.
    L,
    /// Copenhagen (XL-1): 4,000 units, 61,000 users, depth 8.
    Xl,
    /// Beyond any municipality: 10,000 units, 120,000 users, depth 12.
    Stress,
}

/// The numbers of a profile.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Active units.
    pub units: usize,
    /// Active users.
    pub active_users: usize,
    /// Inactive users.
    pub inactive_users: usize,
    /// Maximum depth, root = 1.
    pub max_depth: usize,
    /// Manager positions (Lederrolle).
    pub managers: usize,
    /// Top-level subtrees (forvaltninger).
    pub top_subtrees: usize,
    /// The municipality's name.
    pub name: &'static str,
}

impl Size {
    /// The profile's numbers.
    pub fn profile(self) -> Profile {
        let p = |units, active_users, inactive_users, max_depth, managers, top_subtrees, name| {
            Profile {
                units,
                active_users,
                inactive_users,
                max_depth,
                managers,
                top_subtrees,
                name,
            }
        };
        match self {
            Size::Xs => p(30, 280, 30, 3, 20, 4, "Læsø"),
            Size::S => p(60, 550, 60, 4, 40, 5, "Fanø"),
            Size::M => p(320, 4_300, 600, 6, 260, 6, "Favrskov"),
            Size::L => p(650, 9_000, 1_200, 7, 550, 6, "Viborg"),
            Size::Xl => p(4_000, 54_000, 7_000, 8, 3_300, 7, "København"),
            Size::Stress => p(10_000, 100_000, 20_000, 12, 7_000, 8, "Storkøbing"),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Size::Xs => "xs",
            Size::S => "s",
            Size::M => "m",
            Size::L => "l",
            Size::Xl => "xl",
            Size::Stress => "stress",
        })
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Size as clap::ValueEnum>::from_str(s, true)
    }
}

const FORVALTNINGER: [(&str, u32); 8] = [
    ("Børne- og Ungdomsforvaltningen", 10),
    ("Sundheds- og Omsorgsforvaltningen", 9),
    ("Socialforvaltningen", 5),
    ("Beskæftigelses- og Integrationsforvaltningen", 3),
    ("Teknik- og Miljøforvaltningen", 2),
    ("Kultur- og Fritidsforvaltningen", 2),
    ("Økonomiforvaltningen", 1),
    ("Borgmesterens Forvaltning", 1),
];
const PLACES: [&str; 20] = [
    "Nord",
    "Syd",
    "Øst",
    "Vest",
    "Ørestad",
    "Søndermarken",
    "Nørrebro",
    "Østerbro",
    "Valby",
    "Brønshøj",
    "Æblehaven",
    "Skæring",
    "Højbjerg",
    "Åby",
    "Løgten",
    "Kærby",
    "Tåstrup",
    "Fælledvej",
    "Strandgården",
    "Bækkelund",
];
const CENTRES: [&str; 8] = [
    "Center for Dagtilbud",
    "Center for Skole",
    "Hjemmeplejen",
    "Plejecentre",
    "Jobcenter",
    "Center for Handicap",
    "Ejendomme og Drift",
    "Økonomi og Personale",
];
const INSTITUTIONS: [&str; 8] = [
    "Skole",
    "Dagtilbud",
    "Plejecenter",
    "Børnehuset",
    "Ungdomsskolen",
    "Botilbud",
    "Sundhedsplejen",
    "Kontor",
];
const TITLES: [&str; 20] = [
    "Pædagog",
    "Social- og sundhedsassistent",
    "Lærer",
    "Sygeplejerske",
    "Fuldmægtig",
    "Konsulent",
    "Specialkonsulent",
    "Socialrådgiver",
    "Ergoterapeut",
    "Fysioterapeut",
    "Køkkenmedhjælper",
    "Pædagogmedhjælper",
    "Sekretær",
    "Overassistent",
    "Tandplejer",
    "Jobkonsulent",
    "Vejleder",
    "Ingeniør",
    "Kok",
    "Rengøringsassistent",
];
const MANAGER_TITLES: [&str; 5] = [
    "Leder",
    "Afdelingsleder",
    "Skoleleder",
    "Centerchef",
    "Teamleder",
];
const FIRST: [&str; 40] = [
    "Anne", "Mette", "Lærke", "Søren", "Jørgen", "Bjørn", "Åse", "Kirsten", "Hanne", "Lars",
    "Mads", "Rasmus", "Freja", "Ida", "Emma", "Mikkel", "Frederik", "Ole", "Bente", "Birgitte",
    "Karen", "Peter", "Niels", "Jens", "Sofie", "Maja", "Astrid", "Signe", "Thomas", "Henrik",
    "Mohammed", "Fatima", "Ali", "Zeynep", "Ingrid", "Torben", "Kåre", "Bodil", "Grethe", "Ulla",
];
const MIDDLE: [&str; 6] = ["Marie", "Louise", "Emil", "Kristian", "Sofie", "Møller"];
const LAST: [&str; 30] = [
    "Jensen",
    "Nielsen",
    "Hansen",
    "Pedersen",
    "Andersen",
    "Christensen",
    "Larsen",
    "Sørensen",
    "Rasmussen",
    "Jørgensen",
    "Petersen",
    "Madsen",
    "Kristensen",
    "Olsen",
    "Thomsen",
    "Christiansen",
    "Poulsen",
    "Johansen",
    "Møller",
    "Mortensen",
    "Østergaard",
    "Kjær",
    "Bæk",
    "Lund",
    "Holm",
    "Søndergaard",
    "Damgaard",
    "Frølich",
    "Ærøe",
    "Åberg",
];

fn random_uuid(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn ascii_slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        match c {
            'æ' => out.push_str("ae"),
            'ø' => out.push_str("oe"),
            'å' => out.push_str("aa"),
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    out
}

/// The mail domain of a generated municipality.
pub fn domain_of(size: Size) -> String {
    format!("{}.dk", ascii_slug(size.profile().name))
}

struct Draft {
    uuid: Uuid,
    name: String,
    parent: Option<usize>,
    level: usize,
    weight: u32,
    children: usize,
}

/// Generates a municipality. Same `(cvr, size, seed, today)`, same snapshot.
pub fn generate(cvr: &Cvr, size: Size, seed: u64, today: NaiveDate) -> Snapshot {
    let profile = size.profile();
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ u64::from(
            cvr.as_str()
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b))),
        ),
    );
    let domain = domain_of(size);

    // Units: a root, the forvaltninger, then a skewed tree down to max_depth.
    let mut drafts: Vec<Draft> = vec![Draft {
        uuid: random_uuid(&mut rng),
        name: format!("{} Kommune", profile.name),
        parent: None,
        level: 1,
        weight: 1,
        children: 0,
    }];
    for (name, weight) in FORVALTNINGER
        .iter()
        .take(profile.top_subtrees.min(profile.units.saturating_sub(1)))
    {
        drafts.push(Draft {
            uuid: random_uuid(&mut rng),
            name: (*name).to_owned(),
            parent: Some(0),
            level: 2,
            weight: *weight,
            children: 0,
        });
        drafts[0].children += 1;
    }
    // One chain down to the maximum depth under the biggest subtree, so the depth is reached.
    let mut chain_parent = 1.min(drafts.len() - 1);
    while drafts.len() < profile.units && drafts[chain_parent].level < profile.max_depth {
        let level = drafts[chain_parent].level + 1;
        let name = unit_name(
            &mut rng,
            level,
            profile.max_depth,
            &drafts[chain_parent].name,
        );
        let weight = drafts[chain_parent].weight;
        drafts.push(Draft {
            uuid: random_uuid(&mut rng),
            name,
            parent: Some(chain_parent),
            level,
            weight,
            children: 0,
        });
        drafts[chain_parent].children += 1;
        chain_parent = drafts.len() - 1;
    }
    while drafts.len() < profile.units {
        // Parents are picked by subtree weight and level: middle levels branch most.
        let total: u64 = drafts
            .iter()
            .filter(|d| d.level < profile.max_depth)
            .map(|d| u64::from(d.weight) * level_weight(d.level, profile.max_depth))
            .sum();
        let mut pick = rng.random_range(0..total.max(1));
        let mut parent = 0;
        for (index, draft) in drafts
            .iter()
            .enumerate()
            .filter(|(_, d)| d.level < profile.max_depth)
        {
            let w = u64::from(draft.weight) * level_weight(draft.level, profile.max_depth);
            if pick < w {
                parent = index;
                break;
            }
            pick -= w;
        }
        let level = drafts[parent].level + 1;
        let name = unit_name(&mut rng, level, profile.max_depth, &drafts[parent].name);
        let weight = drafts[parent].weight;
        drafts.push(Draft {
            uuid: random_uuid(&mut rng),
            name,
            parent: Some(parent),
            level,
            weight,
            children: 0,
        });
        drafts[parent].children += 1;
    }
    let mut units: Vec<Unit> = drafts
        .iter()
        .map(|d| {
            let kind = if d.name.contains("Team") {
                Some(UnitKind::Team)
            } else if rng.random_bool(0.03) {
                None
            } else if rng.random_bool(0.02) {
                Some(UnitKind::Other)
            } else {
                Some(UnitKind::Department)
            };
            let user_key = match rng.random_range(0..10) {
                0 => None,
                1 => Some(format!(
                    "{}-{:04}",
                    &ascii_slug(profile.name)[..2.min(ascii_slug(profile.name).len())]
                        .to_uppercase(),
                    rng.random_range(0..10_000)
                )),
                _ => Some(d.name.clone()),
            };
            Unit {
                uuid: UnitId(d.uuid),
                name: d.name.clone(),
                user_key,
                parent_uuid: d.parent.map(|p| UnitId(drafts[p].uuid)),
                active: true,
                kind,
                contact: unit_contact(d.uuid, &d.name),
            }
        })
        .collect();
    // Inactive units (about 8 %), as leaves below random active units.
    let n_inactive_units = (profile.units * 8 / 100).max(1);
    for _ in 0..n_inactive_units {
        let parent = rng.random_range(0..drafts.len());
        if drafts[parent].level >= profile.max_depth {
            continue;
        }
        units.push(Unit {
            uuid: UnitId(random_uuid(&mut rng)),
            name: format!(
                "{} (nedlagt)",
                unit_name(
                    &mut rng,
                    drafts[parent].level + 1,
                    profile.max_depth,
                    &drafts[parent].name
                )
            ),
            user_key: None,
            parent_uuid: Some(UnitId(drafts[parent].uuid)),
            active: false,
            kind: Some(UnitKind::Department),
            contact: UnitContact::default(),
        });
    }

    // Where users work: containers (3-5 % of units) hold nobody; leaves and big subtrees hold most.
    let n_active_units = drafts.len();
    let containers: HashSet<usize> = (1..n_active_units)
        .filter(|&i| drafts[i].children > 0)
        .filter(|_| rng.random_bool(0.08))
        .collect();
    let unit_weights: Vec<u64> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i == 0 {
                1
            } else if containers.contains(&i) {
                0
            } else {
                let leaf = if d.children == 0 { 4 } else { 1 };
                u64::from(d.weight) * leaf * rng.random_range(5..15)
            }
        })
        .collect();
    let cumulative: Vec<u64> = unit_weights
        .iter()
        .scan(0u64, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let total_weight = cumulative.last().copied().unwrap_or(1).max(1);
    let pick_unit = |rng: &mut ChaCha8Rng| -> usize {
        let x = rng.random_range(0..total_weight);
        cumulative
            .partition_point(|&c| c <= x)
            .min(n_active_units - 1)
    };

    let yesterday_month = today.checked_sub_months(Months::new(1)).unwrap_or(today);
    let tomorrow = today.checked_add_days(Days::new(1)).unwrap_or(today);
    let in_two_months = today.checked_add_months(Months::new(2)).unwrap_or(today);
    let mut user_names = HashSet::new();
    let mut users = Vec::with_capacity(profile.active_users + profile.inactive_users);
    let mut members_by_unit: Vec<Vec<usize>> = vec![Vec::new(); n_active_units];
    for index in 0..profile.active_users + profile.inactive_users {
        let active = index < profile.active_users;
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let name = if rng.random_bool(0.005) {
            None
        } else if rng.random_bool(0.15) {
            Some(format!(
                "{first} {} {last}",
                MIDDLE[rng.random_range(0..MIDDLE.len())]
            ))
        } else {
            Some(format!("{first} {last}"))
        };
        let mut user_name = format!(
            "{}{}",
            first.chars().take(2).collect::<String>().to_uppercase(),
            last.chars().take(2).collect::<String>().to_uppercase()
        );
        let base = user_name.clone();
        let mut n = 1;
        while !user_names.insert(user_name.clone()) {
            n += 1;
            user_name = format!("{base}{n}");
        }
        let email = if rng.random_bool(if active { 0.97 } else { 0.9 }) {
            Some(format!("{}@{domain}", ascii_slug(&user_name)))
        } else {
            None
        };
        let phone = if rng.random_bool(0.65) {
            Some(format!(
                "{} {:02} {:02} {:02}",
                rng.random_range(20..99),
                rng.random_range(0..100),
                rng.random_range(0..100),
                rng.random_range(0..100)
            ))
        } else {
            None
        };
        let since =
            NaiveDate::from_ymd_opt(rng.random_range(1995..2025), rng.random_range(1..13), 1)
                .unwrap_or(today);
        let mut positions = Vec::new();
        let title = |rng: &mut ChaCha8Rng| {
            (!rng.random_bool(0.02)).then(|| TITLES[rng.random_range(0..TITLES.len())].to_owned())
        };
        if active {
            let unit = if index < 5 { 0 } else { pick_unit(&mut rng) };
            members_by_unit[unit].push(index);
            let valid_from = (!rng.random_bool(0.03)).then_some(since);
            let valid_to = rng.random_bool(0.02).then_some(in_two_months);
            positions.push(Position {
                unit_uuid: UnitId(drafts[unit].uuid),
                title: title(&mut rng),
                manager: false,
                valid_from,
                valid_to,
            });
            if rng.random_bool(0.02) {
                let other = pick_unit(&mut rng);
                if other != unit {
                    positions.push(Position {
                        unit_uuid: UnitId(drafts[other].uuid),
                        title: title(&mut rng),
                        manager: false,
                        valid_from: Some(since),
                        valid_to: None,
                    });
                }
            }
            if rng.random_bool(0.03) {
                positions.push(Position {
                    unit_uuid: UnitId(drafts[pick_unit(&mut rng)].uuid),
                    title: title(&mut rng),
                    manager: false,
                    valid_from: Some(tomorrow),
                    valid_to: None,
                });
            }
        }
        if rng.random_bool(if active { 0.05 } else { 0.6 }) {
            positions.push(Position {
                unit_uuid: UnitId(drafts[pick_unit(&mut rng)].uuid),
                title: title(&mut rng),
                manager: false,
                valid_from: Some(since.min(yesterday_month)),
                valid_to: Some(yesterday_month),
            });
        }
        users.push(User {
            uuid: UserId(random_uuid(&mut rng)),
            user_name,
            name,
            email,
            phone,
            active,
            positions,
        });
    }
    // Managers: one member of each of the biggest units gets a Lederrolle there.
    let mut by_size: Vec<usize> = (0..n_active_units)
        .filter(|&u| !members_by_unit[u].is_empty())
        .collect();
    by_size.sort_by_key(|&u| std::cmp::Reverse(members_by_unit[u].len()));
    for &unit in by_size.iter().take(profile.managers) {
        let members = &members_by_unit[unit];
        let who = members[rng.random_range(0..members.len())];
        let since = users[who].positions.first().and_then(|p| p.valid_from);
        users[who].positions.push(Position {
            unit_uuid: UnitId(drafts[unit].uuid),
            title: Some(MANAGER_TITLES[rng.random_range(0..MANAGER_TITLES.len())].to_owned()),
            manager: true,
            valid_from: since,
            valid_to: None,
        });
    }
    Snapshot {
        cvr: cvr.clone(),
        units,
        users,
        partial: None,
    }
}

fn level_weight(level: usize, max_depth: usize) -> u64 {
    match level {
        1 => 0,
        2 => 3,
        l if l + 1 >= max_depth => 2,
        _ => 5,
    }
}

fn unit_name(rng: &mut ChaCha8Rng, level: usize, max_depth: usize, parent: &str) -> String {
    let place = PLACES[rng.random_range(0..PLACES.len())];
    if level == 3 {
        format!("{} {place}", CENTRES[rng.random_range(0..CENTRES.len())])
    } else if level > 3 && (level + 1 >= max_depth || rng.random_bool(0.3)) {
        let base = parent.split(" – ").next().unwrap_or(parent);
        format!("{base} – Team {}", rng.random_range(1..9))
    } else {
        let institution = INSTITUTIONS[rng.random_range(0..INSTITUTIONS.len())];
        match institution {
            "Skole" => format!(
                "Skole {place} – {}",
                ["Indskoling", "Mellemtrin", "Udskoling"][rng.random_range(0..3)]
            ),
            other => format!("{other} {place}"),
        }
    }
}

/// A unit's contact data, derived from its UUID (so that the random stream, and with it every
/// other generated value, is the same as without it): a postal address on about 70 % of
/// units, an e-mail on 40 %, a phone on 30 %, an EAN on 10 %; a P-number (10 digits) on
/// 80 % and a CVR number (8 digits) on 70 %, which the simulator serves as Virksomhed objects.
fn unit_contact(id: uuid::Uuid, name: &str) -> UnitContact {
    let (high, bits) = id.as_u64_pair();
    let part = |shift: u32, modulo: u64| (bits >> shift) % modulo;
    let slug = ascii_slug(name);
    UnitContact {
        postal_address: (part(0, 10) < 7).then(|| {
            format!(
                "{} {}, {} {}",
                [
                    "Rådhuspladsen",
                    "Skolegade",
                    "Havnevej",
                    "Søndergade",
                    "Parkvej"
                ][part(8, 5) as usize],
                part(12, 120) + 1,
                8000 + part(20, 200),
                "Aarhus C"
            )
        }),
        email: (part(28, 10) < 4).then(|| format!("{slug}@kommune.dk")),
        phone: (part(32, 10) < 3).then(|| {
            format!(
                "87 {:02} {:02} {:02}",
                part(36, 100),
                part(40, 100),
                part(44, 100)
            )
        }),
        ean: (part(48, 10) < 1).then(|| format!("579800{:07}", part(52, 10_000_000))),
        p_number: (high % 10 < 8)
            .then(|| (1_000_000_000 + (high >> 8) % 9_000_000_000).to_string()),
        cvr: ((high >> 4) % 10 < 7).then(|| (10_000_000 + (high >> 20) % 90_000_000).to_string()),
    }
}

/// What a correct client with default options reads from the simulator serving `truth` on
/// `today`: the same snapshot without positions that ended (valid_to on or before today), and
/// without the units' contact data, which is read only with the `unit_contact` option.
pub fn expected_read(truth: &Snapshot, today: NaiveDate) -> Snapshot {
    let mut expected = expected_read_with_unit_contact(truth, today);
    for unit in &mut expected.units {
        unit.contact = UnitContact::default();
    }
    expected
}

/// What a correct Organisation 6 client with the `unit_contact` option reads: [`expected_read`]
/// with each unit's whole contact data (postal address, e-mail, phone and EAN from Adresse
/// objects, P-number and CVR from Virksomhed objects). A v5 client reads no P-number or CVR
/// (that contract has no Virksomhed service).
pub fn expected_read_with_unit_contact(truth: &Snapshot, today: NaiveDate) -> Snapshot {
    let mut expected = truth.clone();
    for user in &mut expected.users {
        user.positions
            .retain(|p| p.valid_to.is_none_or(|to| to > today));
    }
    expected
}
