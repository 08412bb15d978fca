import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isLoopback } from '../shared/auth';
import { rateKey } from './websocket';

test('connection rates are counted per IPv4 address, per IPv6 /64, and for this machine as one', () => {
  assert.equal(rateKey('10.1.2.3'), '10.1.2.3');
  assert.equal(rateKey('::ffff:10.1.2.3'), '10.1.2.3', 'an IPv4 address mapped into IPv6 is the same address');
  assert.equal(rateKey('127.0.0.1'), 'loopback');
  assert.equal(rateKey('127.0.1.7'), 'loopback', 'every 127.x address is this machine');
  assert.equal(rateKey('::1'), 'loopback');
  assert.equal(rateKey('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(rateKey('2001:db8:0:0:ffff:1:2:3'), '2001:db8:0:0::/64', 'one host gets its whole /64');
  assert.equal(rateKey('2001:DB8:0000:0001::9'), '2001:db8:0:1::/64');
  assert.notEqual(rateKey('2001:db8:0:1::1'), rateKey('2001:db8:0:2::1'));
});

test('loopback addresses', () => {
  for (const h of ['127.0.0.1', '127.9.9.9', 'localhost', '::1', '[::1]']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '10.0.0.1', '::', '192.0.2.1', 'example.com']) assert.ok(!isLoopback(h), h);
});
