//! Certificates for the control plane, generated in-process so tests need no openssl and every
//! control plane gets its own trust root.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::error::Result;

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone)]
pub(crate) struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA signs the apiserver's serving certificate and every client certificate; the apiserver
/// trusts it as `--client-ca-file`, so minting a client identity is one signature away.
pub(crate) struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_pem: String,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
    /// Service-account token signing key pair (private PKCS#8 PEM, public SPKI PEM).
    pub sa_private_pem: String,
    pub sa_public_pem: String,
}

impl Pki {
    pub fn generate(serving_ips: &[IpAddr]) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "palisade-testkit-ca");
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();

        let sa_key = KeyPair::generate()?;
        let mut pki = Pki {
            ca_params,
            ca_key,
            ca_pem,
            serving: CertAndKey { cert_pem: String::new(), key_pem: String::new() },
            admin: CertAndKey { cert_pem: String::new(), key_pem: String::new() },
            sa_private_pem: sa_key.serialize_pem(),
            sa_public_pem: sa_key.public_key_pem(),
        };
        pki.serving = pki.serving_cert(serving_ips)?;
        pki.admin = pki.client_cert("palisade-admin", Some("system:masters"))?;
        Ok(pki)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.ca_params, &self.ca_key)
    }

    fn serving_cert(&self, ips: &[IpAddr]) -> Result<CertAndKey> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        let mut all_ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
        all_ips.extend(ips.iter().copied());
        all_ips.dedup();
        params.subject_alt_names.extend(all_ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names.push(SanType::DnsName("kubernetes.default.svc".try_into()?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client certificate: the apiserver maps CN to the user name and O to a group. (rcgen keeps
    /// one value per attribute type, hence at most one group.)
    pub fn client_cert(&self, user: &str, group: Option<&str>) -> Result<CertAndKey> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params.distinguished_name.push(DnType::OrganizationName, group);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A fresh CA and a serving certificate it signed for `localhost` and 127.0.0.1, for servers
/// that tests start (the operator's plan stream, the admission webhook): (CA, certificate, key) PEM.
pub fn serving_certificate() -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "palisade-test-serving-ca");
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&leaf_key, &Issuer::new(ca_params, ca_key))?;
    Ok((ca.pem(), leaf.pem(), leaf_key.serialize_pem()))
}
