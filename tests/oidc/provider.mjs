// A real OpenID Connect provider for the sign-in tests: npm `oidc-provider`
// (a certified implementation) on 127.0.0.1 with its development login and
// consent pages, which accept any login name as the account id.
//
//   node tests/oidc/provider.mjs PORT  with OIDC_CLIENTS='[{client_id, …}]'
//
// Prints "READY <issuer>" once it listens. Every account's claims derive from
// its id: email <id>@example.org (never verified), name "Name <id>".
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]');

const provider = new Provider(issuer, {
  clients,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Claims in the id_token too, as many providers do.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['parley-test-cookie-key'] },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.org`, email_verified: false, name: `Name ${id}` };
      },
    };
  },
});

// Quiet: the tests read only the READY line.
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
