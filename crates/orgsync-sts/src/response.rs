//! Serde shapes of the response payloads we read, matched by local name so any namespace prefix works.
//!
//! One shape serves every object type: fields an object does not have stay empty. CPR elements
//! (`CPR-NummerTekst`) are deliberately not declared, so they are skipped unread.

use serde::Deserialize;

/// `sd:StandardRetur`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StandardRetur {
    #[serde(rename = "StatusKode", default)]
    pub status: Option<String>,
    #[serde(rename = "FejlbeskedTekst", default)]
    pub message: Option<String>,
}

/// Outputs that carry a `StandardRetur`.
pub(crate) trait HasStatus {
    fn standard_retur(&self) -> Option<&StandardRetur>;
}

/// `SoegOutput`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SoegOutput {
    #[serde(rename = "StandardRetur", default)]
    pub standard_retur: Option<StandardRetur>,
    #[serde(rename = "IdListe", default)]
    pub ids: Option<IdListe>,
}

/// `sd:IdListe`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IdListe {
    #[serde(rename = "UUIDIdentifikator", default)]
    pub ids: Vec<String>,
}

/// `ListOutput`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListOutput {
    #[serde(rename = "StandardRetur", default)]
    pub standard_retur: Option<StandardRetur>,
    #[serde(rename = "FiltreretOejebliksbillede", default)]
    pub objects: Vec<ObjectXml>,
}

/// `FremsoegObjekthierarkiOutput`: only the units are read.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HierarchyOutput {
    #[serde(rename = "StandardRetur", default)]
    pub standard_retur: Option<StandardRetur>,
    #[serde(rename = "OrganisationEnheder", default)]
    pub units: Option<ObjectList>,
}

/// A container of `FiltreretOejebliksbillede`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ObjectList {
    #[serde(rename = "FiltreretOejebliksbillede", default)]
    pub objects: Vec<ObjectXml>,
}

impl HasStatus for SoegOutput {
    fn standard_retur(&self) -> Option<&StandardRetur> {
        self.standard_retur.as_ref()
    }
}
impl HasStatus for ListOutput {
    fn standard_retur(&self) -> Option<&StandardRetur> {
        self.standard_retur.as_ref()
    }
}
impl HasStatus for HierarchyOutput {
    fn standard_retur(&self) -> Option<&StandardRetur> {
        self.standard_retur.as_ref()
    }
}

/// `FiltreretOejebliksbillede`: the object id and its registrations.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ObjectXml {
    #[serde(rename = "ObjektType", default)]
    pub object: Option<UnikId>,
    #[serde(rename = "Registrering", default)]
    pub registrations: Vec<RegistrationXml>,
}

/// `sd:UnikIdType` (and `UuidLabelInputType`): a UUID or a URN, with an optional label.
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct UnikId {
    #[serde(rename = "UUIDIdentifikator", default)]
    pub uuid: Option<String>,
    #[serde(rename = "URNIdentifikator", default)]
    pub urn: Option<String>,
}

/// A `Registrering`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegistrationXml {
    #[serde(rename = "Tidspunkt", default)]
    pub time: Option<String>,
    #[serde(rename = "LivscyklusKode", default)]
    pub lifecycle: Option<String>,
    #[serde(rename = "AttributListe", default)]
    pub attributes: Option<AttributeList>,
    #[serde(rename = "TilstandListe", default)]
    pub states: Option<StateList>,
    #[serde(rename = "RelationListe", default)]
    pub relations: Option<RelationList>,
}

/// `AttributListe`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AttributeList {
    #[serde(rename = "Egenskab", default)]
    pub properties: Vec<PropertyXml>,
}

/// `Egenskab` of any object type.
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct PropertyXml {
    #[serde(rename = "Virkning", default)]
    pub virkning: Option<VirkningXml>,
    #[serde(rename = "BrugervendtNoegleTekst", default)]
    pub user_key: Option<String>,
    #[serde(rename = "EnhedNavn", default)]
    pub unit_name: Option<String>,
    #[serde(rename = "FunktionNavn", default)]
    pub function_name: Option<String>,
    #[serde(rename = "BrugerNavn", default)]
    pub user_name: Option<String>,
    #[serde(rename = "NavnTekst", default)]
    pub person_name: Option<String>,
    #[serde(rename = "AdresseTekst", default)]
    pub address: Option<String>,
    /// Virksomhed: `sts:P-NummerTekst`.
    #[serde(rename = "P-NummerTekst", default)]
    pub p_number: Option<String>,
    /// Virksomhed: `sts:CVR-NummerTekst`.
    #[serde(rename = "CVR-NummerTekst", default)]
    pub cvr: Option<String>,
}

/// `TilstandListe`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StateList {
    #[serde(rename = "Gyldighed", default)]
    pub validity: Vec<ValidityXml>,
}

/// `orgfaelles:Gyldighed`.
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct ValidityXml {
    #[serde(rename = "Virkning", default)]
    pub virkning: Option<VirkningXml>,
    #[serde(rename = "GyldighedStatusKode", default)]
    pub status: Option<String>,
}

/// `RelationListe`: the relations we read (others are skipped).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RelationList {
    #[serde(rename = "Adresser", default)]
    pub addresses: Vec<RelationXml>,
    #[serde(rename = "Enhedstype", default)]
    pub unit_type: Vec<RelationXml>,
    #[serde(rename = "Funktionstype", default)]
    pub function_type: Vec<RelationXml>,
    #[serde(rename = "Overordnet", default)]
    pub parent: Vec<RelationXml>,
    #[serde(rename = "Produktionsenhed", default)]
    pub production_unit: Vec<RelationXml>,
    #[serde(rename = "Skatteenhed", default)]
    pub tax_unit: Vec<RelationXml>,
    #[serde(rename = "Tilhoerer", default)]
    pub belongs_to: Vec<RelationXml>,
    #[serde(rename = "TilknyttedeBrugere", default)]
    pub users: Vec<RelationXml>,
    #[serde(rename = "TilknyttedeEnheder", default)]
    pub units: Vec<RelationXml>,
    #[serde(rename = "TilknyttedeOrganisationer", default)]
    pub organisations: Vec<RelationXml>,
    #[serde(rename = "TilknyttedePersoner", default)]
    pub persons: Vec<RelationXml>,
}

/// A relation entry (single, multiple or address relation).
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct RelationXml {
    #[serde(rename = "Virkning", default)]
    pub virkning: Option<VirkningXml>,
    #[serde(rename = "ReferenceID", default)]
    pub reference: Option<UnikId>,
    #[serde(rename = "Rolle", default)]
    pub role: Option<UnikId>,
    #[serde(rename = "Indeks", default)]
    pub index: Option<String>,
}

/// `sd:Virkning`.
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct VirkningXml {
    #[serde(rename = "FraTidspunkt", default)]
    pub from: Option<TidspunktXml>,
    #[serde(rename = "TilTidspunkt", default)]
    pub to: Option<TidspunktXml>,
}

/// `sd:TidspunktType`: a time stamp or the open bound.
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct TidspunktXml {
    #[serde(rename = "TidsstempelDatoTid", default)]
    pub timestamp: Option<String>,
    #[serde(rename = "GraenseIndikator", default)]
    pub open: Option<String>,
}
