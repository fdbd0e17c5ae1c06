#!/usr/bin/perl
# A stand-in for Plunk's legacy API inside the container test (which has no network and
# only Debian's minimal base, whose perl has sockets): HTTP/1.1 with keep-alive on
# 127.0.0.1, one process per connection. A key containing "refused" is answered 401,
# any other 200. Each request is appended to LOG as "<status> <key> <body>", so the test
# can tell which project (key) received which event.
#   perl plunk-standin.pl PORT LOG
use strict;
use warnings;
use IO::Socket::INET;

my ($port, $log) = @ARGV;
my $server = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 64, ReuseAddr => 1)
    or die "plunk-standin: cannot listen on $port: $!\n";
$SIG{CHLD} = 'IGNORE';
while (1) {
    my $client = $server->accept or next;
    my $pid = fork();
    if (defined $pid && $pid == 0) {
        close $server;
        serve($client);
        exit 0;
    }
    close $client;
}

sub serve {
    my ($client) = @_;
    binmode $client;
    while (defined(my $request = <$client>)) {
        my %headers;
        while (defined(my $line = <$client>)) {
            $line =~ s/\r?\n\z//;
            last if $line eq '';
            my ($name, $value) = split /:\s*/, $line, 2;
            $headers{lc $name} = $value // '';
        }
        my $body = '';
        my $length = $headers{'content-length'} // 0;
        while (length($body) < $length) {
            my $read = read($client, $body, $length - length($body), length($body));
            return unless $read;
        }
        my ($key) = ($headers{authorization} // '') =~ /Bearer\s+(\S+)/;
        $key //= 'none';
        my ($status, $answer) = $key =~ /refused/
            ? (401, '{"code":401,"error":"Unauthorized","message":"Invalid API key","time":1764374400000}')
            : (200, '{"success":true,"contact":"c1","event":"e1","timestamp":"2026-12-06T00:00:00.000Z"}');
        open(my $out, '>>', $log) or die "plunk-standin: $log: $!\n";
        print $out "$status $key $body\n";
        close $out;
        print $client "HTTP/1.1 $status X\r\nContent-Type: application/json\r\nContent-Length: " . length($answer) . "\r\n\r\n$answer";
    }
}
