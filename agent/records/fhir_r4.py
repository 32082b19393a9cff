"""What FHIR R4 defines that both validation modes rely on: resource type names, the codes
of the required bindings the agent depends on, and the types it reads deeply.

Names are those of the R4B models (``fhir.resources.R4B``), which the ``full`` mode validates
with, so that both modes accept the same resource types. Kept here as data so that the
``essential`` mode never imports fhir.resources.
"""

from __future__ import annotations

import re
from typing import Any

from agent.errors import FhirError

# The resources the agent reads deeply; every other type is checked for a known name only.
DEEP_TYPES = frozenset({"Patient", "Observation", "Encounter"})

# Concrete resource types of the R4B models (tests check this list against fhir.resources).
RESOURCE_TYPES = frozenset({
    "Account", "ActivityDefinition", "AdministrableProductDefinition", "AdverseEvent",
    "AllergyIntolerance", "Appointment", "AppointmentResponse", "AuditEvent", "Basic", "Binary",
    "BiologicallyDerivedProduct", "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan",
    "CareTeam", "CatalogEntry", "ChargeItem", "ChargeItemDefinition", "Citation", "Claim",
    "ClaimResponse", "ClinicalImpression", "ClinicalUseDefinition", "CodeSystem",
    "Communication", "CommunicationRequest", "CompartmentDefinition", "Composition",
    "ConceptMap", "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest",
    "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition",
    "DeviceMetric", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport",
    "DocumentManifest", "DocumentReference", "Encounter", "Endpoint", "EnrollmentRequest",
    "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceReport",
    "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory",
    "Flag", "Goal", "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService",
    "ImagingStudy", "Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation",
    "ImplementationGuide", "Ingredient", "InsurancePlan", "Invoice", "Library", "Linkage",
    "List", "Location", "ManufacturedItemDefinition", "Measure", "MeasureReport", "Media",
    "Medication", "MedicationAdministration", "MedicationDispense", "MedicationKnowledge",
    "MedicationRequest", "MedicationStatement", "MedicinalProductDefinition",
    "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder",
    "NutritionProduct", "Observation", "ObservationDefinition", "OperationDefinition",
    "OperationOutcome", "Organization", "OrganizationAffiliation", "PackagedProductDefinition",
    "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person",
    "PlanDefinition", "Practitioner", "PractitionerRole", "Procedure", "Provenance",
    "Questionnaire", "QuestionnaireResponse", "RegulatedAuthorization", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
    "ResearchSubject", "RiskAssessment", "Schedule", "SearchParameter", "ServiceRequest",
    "Slot", "Specimen", "SpecimenDefinition", "StructureDefinition", "StructureMap",
    "Subscription", "SubscriptionStatus", "SubscriptionTopic", "Substance",
    "SubstanceDefinition", "SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities",
    "TestReport", "TestScript", "ValueSet", "VerificationResult", "VisionPrescription"
})

# Codes of required bindings that mapping depends on (fhir.resources does not enforce them).
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
         "entered-in-error", "unknown"}
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Bundle", "type"): frozenset(
        {"document", "message", "transaction", "transaction-response", "batch",
         "batch-response", "history", "searchset", "collection"}
    ),
    ("Encounter", "status"): frozenset(
        {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
         "entered-in-error", "unknown"}
    ),
}


# Element names (JSON keys) of the structures the essential mode checks, as the R4B models
# accept them: R4 elements, "_x" primitive extensions and fhir.resources' "fhir_comments".
# Resources also carry "resourceType". Tests check this table against fhir.resources.
ELEMENTS: dict[str, frozenset[str]] = {
    "Patient": frozenset({
        "_active", "_birthDate", "_deceasedBoolean", "_deceasedDateTime", "_gender",
        "_implicitRules", "_language", "_multipleBirthBoolean", "_multipleBirthInteger",
        "active", "address", "birthDate", "communication", "contact", "contained",
        "deceasedBoolean", "deceasedDateTime", "extension", "fhir_comments", "gender",
        "generalPractitioner", "id", "identifier", "implicitRules", "language", "link",
        "managingOrganization", "maritalStatus", "meta", "modifierExtension",
        "multipleBirthBoolean", "multipleBirthInteger", "name", "photo", "resourceType",
        "telecom", "text"
    }),
    "Observation": frozenset({
        "_effectiveDateTime", "_effectiveInstant", "_implicitRules", "_issued", "_language",
        "_status", "_valueBoolean", "_valueDateTime", "_valueInteger", "_valueString",
        "_valueTime", "basedOn", "bodySite", "category", "code", "component", "contained",
        "dataAbsentReason", "derivedFrom", "device", "effectiveDateTime", "effectiveInstant",
        "effectivePeriod", "effectiveTiming", "encounter", "extension", "fhir_comments",
        "focus", "hasMember", "id", "identifier", "implicitRules", "interpretation", "issued",
        "language", "meta", "method", "modifierExtension", "note", "partOf", "performer",
        "referenceRange", "resourceType", "specimen", "status", "subject", "text",
        "valueBoolean", "valueCodeableConcept", "valueDateTime", "valueInteger",
        "valuePeriod", "valueQuantity", "valueRange", "valueRatio", "valueSampledData",
        "valueString", "valueTime"
    }),
    "ObservationComponent": frozenset({
        "_valueBoolean", "_valueDateTime", "_valueInteger", "_valueString", "_valueTime",
        "code", "dataAbsentReason", "extension", "fhir_comments", "id", "interpretation",
        "modifierExtension", "referenceRange", "valueBoolean", "valueCodeableConcept",
        "valueDateTime", "valueInteger", "valuePeriod", "valueQuantity", "valueRange",
        "valueRatio", "valueSampledData", "valueString", "valueTime"
    }),
    "Encounter": frozenset({
        "_implicitRules", "_language", "_status", "account", "appointment", "basedOn",
        "class", "classHistory", "contained", "diagnosis", "episodeOfCare", "extension",
        "fhir_comments", "hospitalization", "id", "identifier", "implicitRules", "language",
        "length", "location", "meta", "modifierExtension", "partOf", "participant", "period",
        "priority", "reasonCode", "reasonReference", "resourceType", "serviceProvider",
        "serviceType", "status", "statusHistory", "subject", "text", "type"
    }),
    "Bundle": frozenset({
        "_implicitRules", "_language", "_timestamp", "_total", "_type", "entry",
        "fhir_comments", "id", "identifier", "implicitRules", "language", "link", "meta",
        "resourceType", "signature", "timestamp", "total", "type"
    }),
    "BundleEntry": frozenset({
        "_fullUrl", "extension", "fhir_comments", "fullUrl", "id", "link",
        "modifierExtension", "request", "resource", "response", "search"
    }),
    "CodeableConcept": frozenset({
        "_text", "coding", "extension", "fhir_comments", "id", "text"
    }),
    "Coding": frozenset({
        "_code", "_display", "_system", "_userSelected", "_version", "code", "display",
        "extension", "fhir_comments", "id", "system", "userSelected", "version"
    }),
    "Quantity": frozenset({
        "_code", "_comparator", "_system", "_unit", "_value", "code", "comparator",
        "extension", "fhir_comments", "id", "system", "unit", "value"
    }),
    "Reference": frozenset({
        "_display", "_reference", "_type", "display", "extension", "fhir_comments", "id",
        "identifier", "reference", "type"
    }),
    "Period": frozenset({
        "_end", "_start", "end", "extension", "fhir_comments", "id", "start"
    }),
}


def check_resource_type(resource: dict[str, Any], where: str) -> str:
    """``resourceType`` if it names a concrete R4 resource type (not a datatype such as
    Quantity, which the models' look-up would also accept); FhirError naming ``where`` if not.
    Shared by both validation modes."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError(f"{where}: resourceType is missing or not a string")
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(f"{where}: resourceType is not a FHIR R4 resource type")
    return resource_type


_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}").fullmatch


def element_name(key: str) -> str:
    """``key`` for an error path if it has the shape of an element name (schema, not data);
    a placeholder otherwise, since an unknown key is input and could carry anything."""
    return key if _ELEMENT_NAME(key) else "<not an element name>"
