//! The operator's serving certificate for the plan stream: a private CA (the agents' `--ca-file`)
//! and a leaf for 127.0.0.1 and localhost, where the stack's Service proxy listens.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::error::Result;

/// PEM texts: the CA certificate, the serving certificate and its key.
pub struct OperatorTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl OperatorTls {
    pub fn generate() -> Result<OperatorTls> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "palisade-e2e-operator-ca");
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "palisade-operator");
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))?;
        Ok(OperatorTls { ca_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}
