INSERT INTO default.{table} (exchange_timestamp, sequence_number, symbol, side, price, quantity)
SELECT
    toDateTime({start} + intDiv(number, {per_second})),
    number + 1,
    arrayElement(['BTCUSDT', 'ETHUSDT', 'SOLUSDT'], (number % 3) + 1),
    if(number % 2 = 0, 'buy', 'sell'),
    {base_price} + (number % 1000) / 10.,
    0.001 * ((number % 50) + 1)
FROM system.numbers
LIMIT {rows}
