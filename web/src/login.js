// The landing page of a login link: keeps the login's page key in this
// origin's storage (scheme, host and port: no other port of the host can
// read it), then goes on to the page the link named, replacing the landing
// page in the history. The API, the live stream and the shell need the key
// besides the login cookie, which browsers also send to other ports.

import { PAGE_KEY } from './api.js';

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? '';
try {
  localStorage.setItem(PAGE_KEY, meta('hive-page-key'));
  const next = meta('hive-next');
  // Only a path of this dashboard: never `//elsewhere`.
  location.replace(next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/');
} catch (e) {
  document.body.append(
    Object.assign(document.createElement('p'), {
      textContent: `This browser does not let the dashboard keep its login (${e.message}): allow site data for this address, then open a new link from hive-c0re urls.`,
    }),
  );
}
