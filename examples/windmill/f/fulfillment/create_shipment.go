package inner

import (
	"fmt"
	"hash/fnv"
)

type Shipment struct {
	OrderID        string `json:"order_id"`
	TrackingNumber string `json:"tracking_number"`
	Carrier        string `json:"carrier"`
}

func main(order_id string, shipping_address map[string]interface{}) (interface{}, error) {
	if order_id == "" {
		return nil, fmt.Errorf("order_id is required")
	}
	h := fnv.New32a()
	h.Write([]byte(order_id))
	return Shipment{OrderID: order_id, TrackingNumber: fmt.Sprintf("TRK%010d", h.Sum32()), Carrier: "kubemill-post"}, nil
}
